"""FGRPO's constraints by name, and their thresholds (docs/method.md#constrained-objective).

The one list of names (in the order every table, plot and CSV uses) and the one way to read the
tau of each from params; ``fgrpo.constraints`` chooses which of them are active.
"""

from __future__ import annotations

from fgrpo_core.config import FGRPOParams

CONSTRAINTS = ("consistency", "semantic", "spatial")  # R_C, R_S, R_G
JUDGED = ("consistency", "semantic")  # the two a judge scores; spatial grounding is computed


def taus(p: FGRPOParams) -> dict[str, float]:
    """tau_k of every constraint, by name: ``fgrpo.tau_consistency``, ``tau_semantic``, ``tau_spatial``."""
    return {name: getattr(p, f"tau_{name}") for name in CONSTRAINTS}
