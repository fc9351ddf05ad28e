"""Loading policies and processors: safetensors only, remote code off unless asked for."""

from __future__ import annotations

from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str | torch.device | None = None) -> torch.dtype:
    """``auto`` = bfloat16 on CUDA, float32 on CPU (CPU bf16 matmuls are slow and inexact)."""
    if name != "auto":
        if name not in _DTYPES:
            raise ValueError(f"unknown dtype '{name}' (choose auto, {', '.join(_DTYPES)})")
        return _DTYPES[name]
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    return torch.bfloat16 if on_cuda else torch.float32


def _check_local(path: str | Path) -> None:
    p = Path(path)
    if p.exists() and not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a model directory (no config.json)")


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                device: str | torch.device = "cpu"):
    """A ``Qwen2_5_VLForConditionalGeneration`` (or the class the config names) from safetensors."""
    from transformers import AutoModelForImageTextToText

    _check_local(path)
    model = AutoModelForImageTextToText.from_pretrained(
        str(path), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    return model.to(device)


def load_processor(path: str | Path, trust_remote_code: bool = False, min_pixels: int | None = None,
                   max_pixels: int | None = None):
    from transformers import AutoProcessor

    _check_local(path)
    kwargs = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
