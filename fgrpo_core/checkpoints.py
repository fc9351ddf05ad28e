"""Where policies live on disk, and which one is newest: one home for the naming rules.

    <sft.out_dir>/model              the SFT stage's final model (policy version 0 of FGRPO)
    <fgrpo.out_dir>/round-<r>        the policy after FGRPO round r (policy version r), with the
                                     trainer's state file beside the weights

A round checkpoint is written to a temporary folder (its name starts with '.') and renamed when
complete, so a ``round-<r>`` folder holding the files asked for is complete. Pure path logic:
nothing here reads a file's content.
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL_SUBDIR = "model"  # <sft.out_dir>/model: the SFT stage's final save_pretrained checkpoint
STATE_FILE = "trainer_state.pt"  # beside a round's weights: optimiser, multipliers, cursor, RNG
_ROUND = re.compile(r"round-(\d+)")


def round_checkpoint(ckpt_dir: str | Path, r: int) -> Path:
    """``<ckpt_dir>/round-<r>``."""
    return Path(ckpt_dir) / f"round-{r}"


def round_of(path: str | Path) -> int | None:
    """The round a checkpoint folder holds (``round-4`` -> 4), or None for any other folder."""
    m = _ROUND.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def policy_version(path: str | Path) -> int:
    """The policy version of a checkpoint: its round, 0 for anything else (SFT, base model).
    Versions count policy steps, as the rollout engine counts them during training."""
    r = round_of(path)
    return 0 if r is None else r


def completed_rounds(ckpt_dir: str | Path, needs: str = STATE_FILE) -> dict[int, Path]:
    """Round -> folder, for every ``round-<r>`` under ``ckpt_dir`` holding ``needs`` (a file name
    or a glob: the trainer's state to resume from, ``*.safetensors`` to evaluate)."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        return {}
    found = {}
    for d in root.iterdir():
        r = round_of(d)
        if r is not None and d.is_dir() and any(d.glob(needs)):
            found[r] = d
    return dict(sorted(found.items()))


def sft_model(sft_out_dir: str | Path) -> Path:
    """Where the SFT stage writes its final model."""
    return Path(sft_out_dir) / MODEL_SUBDIR


def init_path(init_from: str | None, sft_out_dir: str | Path) -> Path:
    """The policy FGRPO starts from (and its KL reference): ``fgrpo.init_from``, else the SFT model."""
    return Path(init_from) if init_from else sft_model(sft_out_dir)


def newest_checkpoint(ckpt_dir: str | Path, sft_out_dir: str | Path | None = None) -> Path:
    """The highest round under ``ckpt_dir`` holding safetensors, else the SFT model (or
    ``sft_out_dir`` itself) when it holds safetensors; FileNotFoundError naming both otherwise."""
    rounds = completed_rounds(ckpt_dir, needs="*.safetensors")
    if rounds:
        return rounds[max(rounds)]
    if sft_out_dir is not None:
        for d in (sft_model(sft_out_dir), Path(sft_out_dir)):
            if any(d.glob("*.safetensors")):
                return d
    where = f"no {Path(ckpt_dir)}/round-N/*.safetensors" + (
        f" and no {sft_model(sft_out_dir)}/*.safetensors" if sft_out_dir is not None else "")
    raise FileNotFoundError(f"no checkpoint found: {where}; pass --checkpoint PATH")
