"""Per-token log-probs of sampled completions under a policy (the trainer's side of a rollout).

A rollout's prompt is re-encoded by the processor (the image expanded into its placeholder
tokens exactly as vLLM does), its completion tokens are appended as sampled, and one forward pass
scores every completion token. Rows are laid out so that all completions end up in the same
columns, which lets the model compute logits for those columns only (``logits_to_keep``):

    [pad .. pad | prompt_i | completion_i | pad .. pad]
     <-- P_max - len(p_i) --><-- T_c (max completion length) -->

Left padding of prompts is what Qwen2.5-VL's generation uses too; its M-RoPE position ids are
computed from the attention mask, so padding never shifts positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from fgrpo_core.prompts import prompt_text
from fgrpo_core.records import PromptInput


@dataclass
class EncodedPrompt:
    """A prompt after the processor: token ids (image placeholders expanded) and pixels."""

    input_ids: list[int]
    pixel_values: Tensor | None  # [P, D] patches of the prompt's image
    image_grid_thw: Tensor | None  # [1, 3]
    # 1 on image placeholder tokens: Qwen2.5-VL builds its 3-D M-RoPE positions from these. Without
    # them transformers silently falls back to 1-D positions, so the trainer would score another
    # function than the one vLLM samples (log-probs off by ~4e-3 on the tiny model).
    mm_token_type_ids: list[int] | None = None


def vision_token_ids(model_config) -> list[int]:
    """Token ids that must never be fed back as completion input (see :func:`collate`)."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return [int(getattr(model_config, n)) for n in names if getattr(model_config, n, None) is not None]


def encode_prompt(processor, prompt: PromptInput) -> EncodedPrompt:
    text = prompt_text(processor, prompt.messages)
    images = [prompt.image] if prompt.image is not None else None
    enc = processor(text=[text], images=images, return_tensors="pt")
    return EncodedPrompt(
        input_ids=enc["input_ids"][0].tolist(),
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        mm_token_type_ids=enc["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in enc else None,
    )


@dataclass
class SequenceBatch:
    """Model inputs for N (prompt, completion) rows and where the completions sit."""

    input_ids: Tensor  # [N, P_max + T_c]
    attention_mask: Tensor  # [N, P_max + T_c]
    pixel_values: Tensor | None  # [sum of patches, D]
    image_grid_thw: Tensor | None  # [N_images, 3]
    completion_ids: Tensor  # [N, T_c]
    completion_mask: Tensor  # [N, T_c] 1 on real completion tokens
    mm_token_type_ids: Tensor | None = None  # [N, P_max + T_c] 1 on prompt image tokens

    def to(self, device) -> "SequenceBatch":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SequenceBatch(*(mv(getattr(self, f)) for f in self.__dataclass_fields__))


def collate(prompts: Sequence[EncodedPrompt], completions: Sequence[Sequence[int]], pad_id: int,
            vision_token_ids: Sequence[int] = ()) -> SequenceBatch:
    """One row per (prompt, completion); ``prompts[i]`` may repeat (G samples of one prompt).

    A completion that contains vision special tokens (``vision_token_ids``: image/video pads,
    vision start/end) is malformed (it gets R_fmt = 0), but fed back as input such a token would
    make the model look for image features that do not exist ("Image features and image tokens do
    not match", trl#3847). So in the *input* row those tokens become ``pad_id``; the *targets*
    keep the sampled ids, so the policy is still scored (and penalised) for emitting them.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    n = len(prompts)
    p_max = max(len(p.input_ids) for p in prompts)
    t_c = max(1, max(len(c) for c in completions))
    ids = torch.full((n, p_max + t_c), pad_id, dtype=torch.long)
    att = torch.zeros((n, p_max + t_c), dtype=torch.long)
    comp = torch.full((n, t_c), pad_id, dtype=torch.long)
    cmask = torch.zeros((n, t_c), dtype=torch.float32)
    with_types = any(p.mm_token_type_ids is not None for p in prompts)
    types = torch.zeros((n, p_max + t_c), dtype=torch.long) if with_types else None
    for i, (p, c) in enumerate(zip(prompts, completions)):
        lp, lc = len(p.input_ids), len(c)
        ids[i, p_max - lp : p_max] = torch.tensor(p.input_ids)
        if types is not None and p.mm_token_type_ids is not None:
            types[i, p_max - lp : p_max] = torch.tensor(p.mm_token_type_ids)  # completions hold no image
        att[i, p_max - lp : p_max + lc] = 1
        if lc:
            ct = torch.tensor(list(c), dtype=torch.long)
            comp[i, :lc] = ct
            if vision_token_ids:
                ct = torch.where(torch.isin(ct, torch.tensor(list(vision_token_ids))), pad_id, ct)
            ids[i, p_max : p_max + lc] = ct
            cmask[i, :lc] = 1.0
    pix = [p.pixel_values for p in prompts if p.pixel_values is not None]
    grids = [p.image_grid_thw for p in prompts if p.image_grid_thw is not None]
    return SequenceBatch(
        input_ids=ids,
        attention_mask=att,
        pixel_values=torch.cat(pix) if pix else None,
        image_grid_thw=torch.cat(grids) if grids else None,
        completion_ids=comp,
        completion_mask=cmask,
        mm_token_type_ids=types,
    )


def completion_logprobs(model, batch: SequenceBatch, temperature: float = 1.0) -> Tensor:
    """``[N, T_c]`` log pi(token | prefix) of each completion token (0 where masked).

    Logits are divided by the sampling temperature, so the ratio pi_new / pi_old compares the
    distributions the tokens were actually sampled from (as TRL and verl do).
    """
    t_c = batch.completion_ids.shape[1]
    kwargs = {}
    if batch.pixel_values is not None:
        kwargs = {"pixel_values": batch.pixel_values, "image_grid_thw": batch.image_grid_thw}
    if batch.mm_token_type_ids is not None:
        kwargs["mm_token_type_ids"] = batch.mm_token_type_ids
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        logits_to_keep=t_c + 1,
        use_cache=False,
        **kwargs,
    )
    logits = out.logits[:, :-1, :].float()  # [N, T_c, V]: position j predicts completion token j
    if temperature and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    return logp * batch.completion_mask
