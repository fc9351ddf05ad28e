"""Rollouts through vLLM, with new policy weights pushed into the live engine.

The engine is started once and kept for the whole run: starting it costs tens of seconds
(torch.compile, KV-cache allocation), while an in-place weight refresh costs milliseconds on the
tiny model. The refresh goes through the worker's ``reload_weights`` (transformers parameter
names, ``is_checkpoint_format=True``): the route TRL's colocate mode takes
(``model_runner.model.load_weights``) breaks on vLLM's CPU build, whose linear layers are
repacked after loading (docs/method.md#stale-weights-in-vllm).

After a refresh the encoder cache (image features of the *old* vision tower) and the prefix
cache (KV of the old weights) are reset: stale entries would silently mix two policies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from fgrpo_core.prompts import prompt_text
from fgrpo_core.records import PromptInput, Rollout, RolloutBatch, SamplingSettings
from fgrpo_core.rollout.base import prompt_seed

if TYPE_CHECKING:
    from fgrpo_core.config import ModelParams, RolloutParams

log = logging.getLogger(__name__)


# Variables torchrun / ``accelerate launch`` set for the training ranks. An engine core started
# from a rank inherits them; it is a world of its own (vLLM picks its own rank, size and port).
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
                "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")


VLLM_LOG_LEVEL = "WARNING"  # VLLM_LOGGING_LEVEL unless the environment sets it


def processor_size_kwargs(min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """The image processor's pixel bounds as ``mm_processor_kwargs``: ``size`` with
    ``shortest_edge``/``longest_edge`` (pixel counts for Qwen2-VL/2.5-VL). Passing ``min_pixels`` and
    ``max_pixels`` to a processor call is deprecated in transformers 5 (a FutureWarning per call);
    vLLM maps ``size`` to the same bounds."""
    size = {k: v for k, v in (("shortest_edge", min_pixels), ("longest_edge", max_pixels)) if v}
    return {"size": size} if size else {}


def in_process_group() -> bool:
    """This process is one of several ranks of an initialised ``torch.distributed`` group."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def _without_launcher_env():
    saved = {k: os.environ.pop(k) for k in LAUNCHER_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class VLLMEngine:
    """A live ``vllm.LLM`` behind the :class:`RolloutEngine` interface.

    ``in_process=True`` runs the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
    faster to start, reproducible, and weights can be handed over as tensors. Create the engine
    under ``if __name__ == "__main__":`` in scripts: vLLM spawns workers otherwise.

    Inside a process group of several ranks (the main process of ``accelerate launch``) the engine
    core always runs in its own process, started without the launcher's variables: an in-process
    engine finds ``torch.distributed`` initialised, takes the trainer's group as its world and
    creates its groups with collectives that the other ranks, which run no engine, never join (the
    main process hangs). Weights then reach it through a safetensors file.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        dtype: str = "auto",
        max_model_len: int = 2048,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        cpu_kvcache_gib: int | None = 1,
        enforce_eager: bool = False,
        in_process: bool = True,
        trust_remote_code: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **llm_kwargs: Any,
    ):
        if in_process and in_process_group():
            log.info("vLLM engine: in a process group of %d ranks, the engine core runs in its own process",
                     torch.distributed.get_world_size())
            in_process = False
        # vLLM logs its start-up and every engine step at INFO, which buries a stage's own progress.
        # Its level is VLLM_LOGGING_LEVEL (default here: WARNING; set INFO to see them); the engine
        # core and worker processes read the variable, this process's "vllm" logger is set too in
        # case vllm was imported (and configured its logging) before the variable was set.
        log_level = os.environ.setdefault("VLLM_LOGGING_LEVEL", VLLM_LOG_LEVEL).upper()
        # vLLM caches its environment variables once an engine runs (vllm.envs.enable_envs_cache);
        # a later engine in this process must read the values set here, not the first engine's.
        from vllm import envs as vllm_envs

        logging.getLogger("vllm").setLevel(log_level)

        vllm_envs.disable_envs_cache()
        # Set either way: an earlier in-process engine in this process leaves "0" behind.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        if cpu_kvcache_gib is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gib))
        from vllm import LLM

        if dtype == "auto" and not torch.cuda.is_available():
            dtype = "float32"
        mm_kwargs = processor_size_kwargs(min_pixels, max_pixels)
        self.model_path = str(model_path)
        self.in_process = in_process
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op because it binds its OpenMP
        # threads to cores; it binds only the worker processes it spawns, so an in-process engine
        # gets the real setter back and the trainer beside it keeps choosing its thread count.
        set_num_threads = torch.set_num_threads
        with (contextlib.nullcontext() if in_process else _without_launcher_env()):
            self.llm = LLM(
                model=self.model_path,
                dtype=dtype,
                max_model_len=max_model_len,
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                enforce_eager=enforce_eager,
                trust_remote_code=trust_remote_code,
                load_format="safetensors",  # never unpickle a .bin checkpoint
                limit_mm_per_prompt={"image": 1, "video": 0},
                mm_processor_kwargs=mm_kwargs or None,
                **llm_kwargs,
            )
        if in_process:
            torch.set_num_threads = set_num_threads
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_version = 0

    @classmethod
    def from_params(cls, model_path: str | os.PathLike, rollout: "RolloutParams", model: "ModelParams",
                    seed: int, **kwargs: Any) -> "VLLMEngine":
        """The engine the params ask for, holding ``model_path`` (the policy, or a judge model): the
        one place that turns ``rollout.*`` and ``model.*`` into engine arguments, pixel bounds
        included, for training, evaluation, the judges and the demo alike."""
        return cls(model_path, dtype=model.dtype, max_model_len=rollout.max_model_len, seed=seed,
                   tensor_parallel_size=rollout.tensor_parallel_size,
                   gpu_memory_utilization=rollout.gpu_memory_utilization, cpu_kvcache_gib=rollout.cpu_kvcache_gib,
                   enforce_eager=rollout.enforce_eager, trust_remote_code=model.trust_remote_code,
                   min_pixels=model.min_pixels, max_pixels=model.max_pixels, **kwargs)

    # ------------------------------------------------------------------ generation
    def _request(self, prompt: PromptInput) -> dict[str, Any]:
        text = prompt_text(self.tokenizer, prompt.messages)
        req: dict[str, Any] = {"prompt": text}
        if prompt.image is not None:
            req["multi_modal_data"] = {"image": prompt.image}
        return req

    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSettings,
                 use_tqdm: bool = False) -> RolloutBatch:
        from vllm import SamplingParams

        greedy = sampling.temperature == 0
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=0.0 if greedy else sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=prompt_seed(sampling.seed, p.prompt_id),
                logprobs=0,  # the sampled token's own log-prob
            )
            for p in prompts
        ]
        outputs = self.llm.generate([self._request(p) for p in prompts], params, use_tqdm=use_tqdm)
        rollouts: list[Rollout] = []
        for prompt, out in zip(prompts, outputs):
            for i, comp in enumerate(sorted(out.outputs, key=lambda c: c.index)):
                ids = list(comp.token_ids)
                lps = None
                if comp.logprobs is not None:
                    lps = [float(step[t].logprob) for step, t in zip(comp.logprobs, ids)]
                rollouts.append(
                    Rollout(
                        prompt_id=prompt.prompt_id,
                        sample_index=i,
                        text=comp.text,
                        token_ids=ids,
                        logprobs=lps,
                        finish_reason=str(comp.finish_reason),
                        prompt_token_ids=list(out.prompt_token_ids or []),
                    )
                )
        return RolloutBatch(rollouts=rollouts, policy_version=self.policy_version)

    # ------------------------------------------------------------------ weights
    def _after_reload(self) -> int:
        engine = self.llm.llm_engine
        engine.reset_encoder_cache()  # image features of the old vision tower
        self.llm.reset_prefix_cache()  # KV computed by the old weights
        self.policy_version += 1
        return self.policy_version

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Push weights (transformers names) into the live engine; returns the new version."""
        if self.in_process:
            tensors = [(n, t.detach()) for n, t in named_tensors]
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(tensors), "is_checkpoint_format": True}
            )
            return self._after_reload()
        # Across processes, hand over a safetensors file rather than pickled tensors.
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="fgrpo-weights-") as tmp:
            save_file({n: t.detach().contiguous().cpu() for n, t in named_tensors},
                      str(Path(tmp) / "model.safetensors"))
            return self.load_weights_from(tmp)

    def load_weights_from(self, checkpoint_dir: str | os.PathLike) -> int:
        """Refresh from a saved checkpoint directory (``*.safetensors`` inside)."""
        if not any(Path(checkpoint_dir).glob("*.safetensors")):
            raise FileNotFoundError(f"no *.safetensors in {checkpoint_dir}")
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_path": str(checkpoint_dir), "is_checkpoint_format": True}
        )
        return self._after_reload()

    def close(self) -> None:
        """Free the engine (tests and stage ends)."""
        import gc

        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as err:  # closing must not mask the error that led here; say what failed
                log.warning("vLLM engine shutdown failed: %s: %s",
                                                    type(err).__name__, err)
            self.llm = None
        gc.collect()
