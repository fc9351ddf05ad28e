"""Dual ascent: hand-computed steps and trajectories, skips, clipping, state, history file."""

from __future__ import annotations

import math

import pytest
import torch

from fgrpo_core.config import AdvantageMode, FGRPOParams
from fgrpo_core.lagrangian import (
    DualAscent,
    MultiplierRecord,
    constraint_stats,
    read_history_csv,
    write_history_csv,
)

NAN = float("nan")

def _dual(thresholds, **kw) -> DualAscent:
    """DualAscent with the params' defaults (the paper's values) unless a test says otherwise, as
    ``DualAscent.from_params`` passes them (the constructor itself has no defaults)."""
    p = FGRPOParams()
    return DualAscent(thresholds, **{"lr": p.lambda_lr, "init": p.lambda_init, "max_value": p.lambda_max,
                                     "min_count": p.lambda_min_count, **kw})


def test_one_step_by_hand():
    d = _dual({"consistency": 0.95, "spatial": 0.65})
    recs = d.update({"consistency": 0.75, "spatial": 0.85}, {"consistency": 40, "spatial": 20})
    # consistency: 1 + 0.05 * (0.95 - 0.75) = 1.01   (violated -> rises)
    # spatial:     1 + 0.05 * (0.65 - 0.85) = 0.99   (satisfied -> falls)
    assert d.lambdas == pytest.approx({"consistency": 1.01, "spatial": 0.99}, abs=1e-15)
    c, s = recs
    assert (c.step, c.name, c.mean, c.count, c.threshold) == (0, "consistency", 0.75, 40, 0.95)
    assert (c.lambda_before, c.skipped, c.reason) == (1.0, False, "")
    assert c.lambda_after == pytest.approx(1.01, abs=1e-15)
    assert c.slack == pytest.approx(-0.2) and s.slack == pytest.approx(0.2)


def test_trajectory_rises_while_violated_and_clips_at_max():
    # Mean stuck at 0.45 with tau 0.95: +0.05 * 0.5 = +0.025 per step; from 1.0, lambda reaches
    # 5.0 after (5 - 1) / 0.025 = 160 steps and stays there.
    d = _dual({"consistency": 0.95})
    traj = [d.update({"consistency": 0.45}, {"consistency": 64})[0].lambda_after for _ in range(200)]
    assert traj[0] == pytest.approx(1.025) and traj[39] == pytest.approx(2.0)
    assert all(b >= a for a, b in zip(traj, traj[1:]))
    assert traj[158] < 5.0 and traj[159] == pytest.approx(5.0) and traj[-1] == 5.0


def test_trajectory_falls_when_satisfied_and_clips_at_zero():
    # Mean 1.0 with tau 0.65: -0.05 * 0.35 = -0.0175 per step; 1 / 0.0175 = 57.1 -> 0 at step 58.
    d = _dual({"spatial": 0.65})
    traj = [d.update({"spatial": 1.0}, {"spatial": 64})[0].lambda_after for _ in range(80)]
    assert traj[0] == pytest.approx(0.9825)
    assert traj[56] > 0.0 and traj[57] == 0.0 and traj[-1] == 0.0
    # ...and rises again once violated: 0 + 0.05 * (0.65 - 0.25) = 0.02
    assert d.update({"spatial": 0.25}, {"spatial": 64})[0].lambda_after == pytest.approx(0.02)


def test_skips_under_min_count_and_on_nan():
    d = _dual({"a": 0.9, "b": 0.9, "c": 0.9}, min_count=8)
    recs = d.update({"a": 0.0, "b": 0.0, "c": NAN}, {"a": 7, "b": 8, "c": 100})
    assert [(r.skipped, r.reason) for r in recs] == [(True, "few_rollouts"), (False, ""), (True, "nan_mean")]
    assert d.lambdas["a"] == 1.0 and d.lambdas["c"] == 1.0
    assert d.lambdas["b"] == pytest.approx(1.045)  # 1 + 0.05 * 0.9


def test_fixed_mode_records_but_never_moves():
    d = _dual({"consistency": 0.95}, init=1.0, fixed=True)
    for step in range(3):
        (r,) = d.update({"consistency": 0.1}, {"consistency": 100})
        assert (r.step, r.lambda_before, r.lambda_after, r.skipped, r.reason) == (step, 1.0, 1.0, True, "fixed")


def test_from_params_one_switch_per_ablation_row():
    p = FGRPOParams(constraints=["consistency", "spatial"], tau_spatial=0.7, lambda_lr=0.1)
    d = DualAscent.from_params(p)
    assert d.thresholds == {"consistency": 0.95, "spatial": 0.7} and not d.fixed and d.lr == 0.1
    for mode in AdvantageMode:
        assert DualAscent.from_params(FGRPOParams(mode=mode)).fixed == (mode is not AdvantageMode.fgrpo)


def test_bad_inputs():
    d = _dual({"consistency": 0.95, "spatial": 0.65})
    with pytest.raises(ValueError, match=r"\['spatial'\]"):
        d.update({"consistency": 0.5}, {"consistency": 10})
    with pytest.raises(ValueError, match=r"init has no value for constraint\(s\) \['b'\]"):
        _dual({"a": 0.5, "b": 0.5}, init={"a": 1.0})
    # extra signals are ignored
    d.update({"consistency": 0.5, "spatial": 0.5, "semantic": 0.1}, {"consistency": 10, "spatial": 10, "semantic": 10})
    assert set(d.lambdas) == {"consistency", "spatial"}


def test_constraint_stats_are_masked_means():
    c = torch.tensor([[1.0, NAN, 0.0], [1.0, 1.0, NAN]])
    g = torch.full((2, 3), NAN)
    stats = constraint_stats({"consistency": c, "spatial": g})
    # consistency: (1 + 0 + 1 + 1) / 4 = 0.75 over 4 applicable rollouts (not / 6)
    assert stats.means["consistency"] == 0.75 and stats.counts["consistency"] == 4
    assert math.isnan(stats.means["spatial"]) and stats.counts["spatial"] == 0
    d = _dual({"consistency": 0.95, "spatial": 0.65}, min_count=4)
    recs = d.update(*stats)
    assert [r.reason for r in recs] == ["", "few_rollouts"]


def test_state_dict_resume_equals_uninterrupted_run():
    means = [{"c": m} for m in (0.2, 0.5, 0.99, 0.97, 0.3, 0.1)]
    counts = {"c": 32}
    full = _dual({"c": 0.95})
    for m in means:
        full.update(m, counts)
    first = _dual({"c": 0.95})
    for m in means[:3]:
        first.update(m, counts)
    resumed = _dual({"c": 0.95})
    resumed.load_state_dict(first.state_dict())
    for m in means[3:]:
        resumed.update(m, counts)
    assert resumed.lambdas == full.lambdas and resumed.step == full.step == 6
    assert resumed.history == full.history
    with pytest.raises(ValueError, match="constraints"):
        _dual({"other": 0.5}).load_state_dict(full.state_dict())


def test_history_csv_round_trip(tmp_path):
    d = _dual({"consistency": 0.95, "spatial": 0.65}, min_count=10)
    d.update({"consistency": 0.5, "spatial": NAN}, {"consistency": 12, "spatial": 0})
    d.update({"consistency": 0.9, "spatial": 0.7}, {"consistency": 12, "spatial": 30})
    path = tmp_path / "runs" / "multipliers.csv"
    write_history_csv(d.history, path)
    back = read_history_csv(path)
    assert len(back) == 4 and all(isinstance(r, MultiplierRecord) for r in back)
    for a, b in zip(back, d.history):
        assert (a.step, a.name, a.count, a.skipped, a.reason, a.lambda_after) == (
            b.step, b.name, b.count, b.skipped, b.reason, b.lambda_after)
        assert (math.isnan(a.mean) and math.isnan(b.mean)) or a.mean == b.mean
    path.write_text(path.read_text().replace("12", "twelve", 1))
    with pytest.raises(ValueError, match=r"multipliers.csv: line 2"):
        read_history_csv(path)
