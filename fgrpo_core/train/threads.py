"""torch's CPU thread count for one stage of work (SFT, the policy update).

On a CPU shared with other jobs, a tiny model trains several times faster on one thread: with
more, each small op waits for its sibling threads to be scheduled (bench/sft.py). vLLM's CPU worker
replaces ``torch.set_num_threads`` with a no-op when it starts; :class:`VLLMEngine` puts the real
function back, because an in-process engine binds no threads (binding happens only for the
worker processes vLLM spawns), so the trainer beside it can still choose its own count.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch


@contextlib.contextmanager
def cpu_threads(n: int | None, field: str = "cpu_threads") -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block, restored after (None: as is).

    ``field`` names the params field in the warning when the count cannot be applied.
    """
    if not n:
        yield
        return
    if n < 0:
        raise ValueError(f"{field} must be a positive number of threads, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    if torch.get_num_threads() != n:
        warnings.warn(f"{field}={n} not applied: torch keeps {torch.get_num_threads()} threads "
                      "(something replaced torch.set_num_threads)", stacklevel=3)
    try:
        yield
    finally:
        torch.set_num_threads(before)
