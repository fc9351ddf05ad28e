"""Assemble an FGRPO trainer from its params sections and explicit paths."""

from __future__ import annotations

from pathlib import Path

import torch

from fgrpo_core.config import FGRPOParams, JudgeParams, ModelParams, RolloutParams
from fgrpo_core.models.loading import load_policy, load_processor, resolve_dtype
from fgrpo_core.train.rounds import FGRPOTrainer, RunLayout

MIXED_PRECISION = {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}  # accelerate's names


def load_split(data_dir: str | Path, split: str):
    """Samples of a staged split (``datasets`` ``save_to_disk`` layout)."""
    import datasets

    from fgrpo_core.data.schema import from_dataset

    path = Path(data_dir) / split
    if not path.is_dir():
        raise FileNotFoundError(f"staged split '{split}' not found at {path} (run `fgrpo stage-data` first)")
    try:
        return from_dataset(datasets.load_from_disk(str(path)))
    except ValueError as err:  # e.g. unknown or missing columns: name the folder
        raise ValueError(f"staged split '{split}' at {path}: {err}") from None


def make_engine(init_path: str | Path, rollout: RolloutParams, model: ModelParams, seed: int):
    """The rollout engine the params ask for, loaded with the policy at ``init_path``."""
    if rollout.engine == "vllm":
        from fgrpo_core.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_params(init_path, rollout, model, seed)
    from fgrpo_core.rollout.hf_engine import HFEngine

    return HFEngine.from_pretrained(str(init_path), dtype=resolve_dtype(model.dtype),
                                    trust_remote_code=model.trust_remote_code)


def create_trainer(*, fgrpo: FGRPOParams, rollout: RolloutParams, model: ModelParams, judges: JudgeParams,
                   init_path: str | Path, data_dir: str | Path, seed: int, engine=None, judge=None,
                   run_dir: str | Path | None = None, ckpt_dir: str | Path | None = None) -> FGRPOTrainer:
    """A trainer starting from ``init_path`` (the SFT checkpoint), which is also the KL reference.

    ``engine``/``judge`` may be passed in to share them (tests, the Prefect flow); otherwise they
    are built from the params, on the main process only: under ``accelerate launch`` the other
    ranks receive each round's rollouts and scores from it (rounds.py). Call ``resume()`` before
    running rounds.
    """
    from fgrpo_core.judges.factory import build_judge
    from fgrpo_core.train.update import process_state

    init_path = Path(init_path)
    if not (init_path / "config.json").is_file():
        raise FileNotFoundError(f"initial policy not found at {init_path} (run `fgrpo sft` first, "
                                f"or point fgrpo.init_path at a model directory)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # float32 master weights; model.dtype is the compute precision (autocast), as in SFT. The
    # reference is float32 too and runs under the same autocast, so its KL starts at exactly 0.
    compute = resolve_dtype(model.dtype, device)
    policy = load_policy(init_path, dtype=torch.float32, trust_remote_code=model.trust_remote_code)
    ref = load_policy(init_path, dtype=torch.float32, trust_remote_code=model.trust_remote_code) if fgrpo.beta else None
    # the pixel bounds the engine gets too: trainer and sampler see the same image tokens
    processor = load_processor(init_path, trust_remote_code=model.trust_remote_code,
                               min_pixels=model.min_pixels, max_pixels=model.max_pixels)
    samples = load_split(data_dir, "rl")
    main = process_state().is_main_process  # one of several ranks under accelerate launch
    if main:
        engine = engine if engine is not None else make_engine(init_path, rollout, model, seed)
        judge = judge if judge is not None else build_judge(judges)
    else:
        engine = judge = None
    layout = RunLayout(Path(run_dir or fgrpo.run_dir), Path(ckpt_dir or fgrpo.out_dir))
    return FGRPOTrainer(params=fgrpo, rollout=rollout, engine=engine, judge=judge, model=policy, ref_model=ref,
                        processor=processor, samples=samples, layout=layout, seed=seed,
                        mixed_precision=MIXED_PRECISION[compute])
