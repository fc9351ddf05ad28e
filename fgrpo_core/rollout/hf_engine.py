"""Rollouts through transformers ``generate`` (reference engine; no vLLM needed)."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from fgrpo_core.prompts import prompt_text
from fgrpo_core.records import PromptInput, Rollout, RolloutBatch, SamplingSettings
from fgrpo_core.rollout.base import prompt_seed


class HFEngine:
    """Generates one prompt at a time (left padding of multimodal batches is not worth the risk
    for a reference engine); each prompt's samples come from a generator seeded per prompt."""

    def __init__(self, model, processor):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.policy_version = 0
        gen = model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
        from fgrpo_core.models.loading import load_policy, load_processor

        return cls(load_policy(path, dtype=dtype, trust_remote_code=trust_remote_code),
                   load_processor(path, trust_remote_code=trust_remote_code))

    def _inputs(self, prompt: PromptInput):
        text = prompt_text(self.processor, prompt.messages)
        images = [prompt.image] if prompt.image is not None else None
        return self.processor(text=[text], images=images, return_tensors="pt").to(self.model.device)

    @torch.no_grad()
    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSettings) -> RolloutBatch:
        greedy = sampling.temperature == 0
        rollouts: list[Rollout] = []
        for prompt in prompts:
            inputs = self._inputs(prompt)
            seed = prompt_seed(sampling.seed, prompt.prompt_id)
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                num_return_sequences=sampling.n,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.eos_ids,
            )
            n_prompt = inputs["input_ids"].shape[1]
            new = out.sequences[:, n_prompt:]  # [n, T]
            logits = torch.stack(out.logits, dim=1).float()  # [n, T, V] raw logits
            logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
            prompt_ids = inputs["input_ids"][0].tolist()
            for i in range(new.shape[0]):
                ids = new[i].tolist()
                # Cut at the first EOS (kept, as vLLM keeps it in token_ids) and drop padding.
                end = next((j + 1 for j, t in enumerate(ids) if t in self.eos_ids), None)
                finish = "stop" if end is not None else "length"
                ids = ids[:end] if end is not None else ids
                rollouts.append(
                    Rollout(
                        prompt_id=prompt.prompt_id,
                        sample_index=i,
                        text=self.tokenizer.decode(ids, skip_special_tokens=True),
                        token_ids=ids,
                        logprobs=logp[i, : len(ids)].tolist(),
                        finish_reason=finish,
                        prompt_token_ids=prompt_ids,
                    )
                )
        return RolloutBatch(rollouts=rollouts, policy_version=self.policy_version)

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        state = dict(named_tensors)
        missing = set(state) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"unknown parameter names: {sorted(missing)[:5]}")
        self.model.load_state_dict(state, strict=False)
        self.policy_version += 1
        return self.policy_version

    def load_weights_from(self, checkpoint_dir) -> int:
        """Refresh from a saved checkpoint directory (safetensors only, as ``load_policy`` reads
        it: checkpoint-format names are mapped back by ``from_pretrained``)."""
        from fgrpo_core.models.loading import load_policy

        saved = load_policy(checkpoint_dir, dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(saved.state_dict(), strict=True)
        del saved
        self.policy_version += 1
        return self.policy_version
