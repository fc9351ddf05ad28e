"""The ablation table's seed summary, target check and figures (fgrpo_core/eval/repro.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fgrpo_core.eval.curves import MultiplierRow, TrainCurves
from fgrpo_core.eval.repro import (
    ir_of_judged, plot_multiplier_trajectories, plot_round_curves, rotation_accuracy, seed_stats, summary_markdown,
    target_check)


def _run(acc, ir, sem, spa=0.1, wf=1.0, half=0.05):
    vals = {"accuracy": acc, "inconsistency_rate": ir, "semantic_grounding": sem, "spatial_grounding": spa,
            "well_formed": wf}
    out = dict(vals)
    for k, v in vals.items():
        out[f"{k}_lo"], out[f"{k}_hi"] = v - half, v + half
    return out


def test_seed_stats_by_hand():
    # accuracy over 3 seeds 0.50, 0.60, 0.70: mean 0.60, min 0.50, max 0.70,
    # sd = sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1
    st = seed_stats([_run(0.5, 0.2, 0.1), _run(0.6, 0.1, 0.3), _run(0.7, 0.0, 0.2)])
    a = st["accuracy"]
    assert (a.mean, a.lo, a.hi, a.n_seeds) == pytest.approx((0.6, 0.5, 0.7, 3))
    assert a.sd == pytest.approx(0.1)
    assert st["inconsistency_rate"].mean == pytest.approx(0.1)
    # One seed: the spread is that run's bootstrap interval, the sd undefined.
    one = seed_stats([_run(0.5, 0.2, 0.1)])["accuracy"]
    assert (one.mean, one.lo, one.hi, one.n_seeds) == pytest.approx((0.5, 0.45, 0.55, 1))
    assert math.isnan(one.sd)
    # A metric no seed defined (e.g. IR with no verdict) stays NaN, not 0.
    nan_ir = _run(0.5, math.nan, 0.1)
    assert math.isnan(seed_stats([nan_ir, nan_ir])["inconsistency_rate"].mean)
    as_json = dict(nan_ir, inconsistency_rate=None, inconsistency_rate_lo=None)  # json.dump writes NaN as null
    assert math.isnan(seed_stats([as_json])["inconsistency_rate"].mean)
    with pytest.raises(ValueError, match="no runs"):
        seed_stats([])


def test_target_check_by_hand_and_zero_ir():
    base = seed_stats([_run(0.60, 0.30, 0.10), _run(0.62, 0.20, 0.12)])  # IR mean 0.25, acc 0.61, sem 0.11
    fg = seed_stats([_run(0.60, 0.05, 0.20), _run(0.60, 0.05, 0.22)])  # IR 0.05, acc 0.60, sem 0.21
    c = target_check(base, fg)
    assert c.ir_ratio == pytest.approx(5.0) and c.ir_met  # 0.25 / 0.05
    assert c.acc_gap == pytest.approx(-0.01) and c.acc_met  # within 2 points
    assert c.semantic_gain == pytest.approx(0.10) and c.semantic_met
    worse = target_check(base, seed_stats([_run(0.55, 0.10, 0.05)]))
    assert worse.ir_ratio == pytest.approx(2.5) and not worse.ir_met
    assert not worse.acc_met and not worse.semantic_met  # -6 points, -6 points
    zero = target_check(base, seed_stats([_run(0.6, 0.0, 0.2)]))
    assert math.isinf(zero.ir_ratio) and zero.ir_met
    md = summary_markdown({"grpo_t": base, "fgrpo": fg}, {"grpo_t": "GRPO-T"}, c, seeds=[0, 1])
    assert "| GRPO-T | 61.0 [60.0, 62.0] | — | 25.0 [20.0, 30.0] | — |" in md  # no per-order accuracy, counts given
    assert "| IR(GRPO-T) / IR(FGRPO) | 5.00× | ≥ 5× | met |" in md
    assert "−1.0 pts" not in md and "-1.0 pts" in md
    assert "∞ (FGRPO IR = 0)" in summary_markdown({"fgrpo": fg}, {}, zero, seeds=[0])


def _mult(constraint, means, lam0=1.0, eta=0.05, tau=0.9):
    rows, lam = [], lam0
    for t, m in enumerate(means):
        after = min(max(lam + eta * (tau - m), 0.0), 10.0)
        rows.append(MultiplierRow(t, constraint, m, 8, tau, lam, after, False))
        lam = after
    return rows


def test_figures_are_written(tmp_path, monkeypatch):
    from PIL import Image

    from fgrpo_core.eval import repro
    from fgrpo_core.eval.plots import PRETTY

    figures = []
    real_save = repro._save
    monkeypatch.setattr(repro, "_save", lambda fig, path: (figures.append(fig), real_save(fig, path))[1])
    hist = {"fgrpo-s0": _mult("consistency", [0.3, 0.5, 0.95, 0.99]) + _mult("semantic", [0.1, 0.2, 0.2, 0.3]),
            "fgrpo_consistency-s0": _mult("consistency", [0.4, 0.6, 0.7, 0.92])}
    p = plot_multiplier_trajectories(hist, tmp_path / "m.png", title="t")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    # What is drawn: per constraint (columns), lambda after each step on top, the mean below.
    axes = figures[-1].axes
    top = {ax.get_title(): ax for ax in axes[:2]}  # row-major: the top row first
    assert set(top) == {PRETTY["consistency"], PRETTY["semantic"]}
    lines = {ln.get_label(): ln for ln in top[PRETTY["consistency"]].get_lines()}
    # lambda by hand: 1 + 0.05 * (0.9 - m) per step: 1.03, 1.05, 1.0475, 1.043
    np.testing.assert_allclose(lines["fgrpo-s0"].get_ydata(), [1.03, 1.05, 1.0475, 1.043], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lines["fgrpo-s0"].get_xdata(), [1, 2, 3, 4])
    assert set(lines) == {"fgrpo-s0", "fgrpo_consistency-s0"}
    assert [ln.get_label() for ln in top[PRETTY["semantic"]].get_lines()] == ["fgrpo-s0"]
    curves = {"grpo_t": [TrainCurves(np.arange(1, 5), {"reward_acc": np.array([0.4, 0.5, 0.5, 0.6])}),
                         TrainCurves(np.arange(1, 4), {"reward_acc": np.array([0.3, np.nan, 0.5])})],
              "fgrpo": [TrainCurves(np.arange(1, 5), {"reward_consistency": np.full(4, np.nan)})]}
    c = plot_round_curves(curves, tmp_path / "c.png")
    with Image.open(c) as im:
        assert im.format == "PNG"
    acc_ax = figures[-1].axes[0]
    (acc,) = acc_ax.get_lines()  # fgrpo has no accuracy values: no line for it
    # mean over the seeds on the rounds both have (3), NaN left out: (0.4+0.3)/2, 0.5, (0.5+0.5)/2
    assert acc.get_label() == "grpo_t"
    np.testing.assert_allclose(acc.get_ydata(), [0.35, 0.5, 0.5], rtol=0, atol=1e-12)
    assert all(not ax.get_lines() for ax in figures[-1].axes[1:])  # all-NaN panels stay empty
    with pytest.raises(ValueError, match="no multiplier rows"):
        plot_multiplier_trajectories({"x": []}, tmp_path / "none.png")


def test_rotation_accuracy_by_hand():
    # 2-option question right in 1 of 2 orders (0.5), 4-option right in 4 of 4 (1.0), a free-form
    # question without orders is skipped: (0.5 + 1.0) / 2 = 0.75.
    rows = [{"rotations": 2, "rotations_correct": 1}, {"rotations": 4, "rotations_correct": 4},
            {"rotations": 0, "rotations_correct": 0}]
    assert rotation_accuracy(rows) == pytest.approx(0.75)
    assert math.isnan(rotation_accuracy([]))


def test_ir_of_judged_by_hand():
    # 10 judged, 2 inconsistent on one benchmark; 5 judged, 3 inconsistent on another: 5 / 15.
    # Unparsed samples (never judged) do not lower it, unlike the paper's IR over all samples.
    b = {"a": {"counts": {"consistency_judged": 10, "inconsistent": 2, "n": 40}},
         "b": {"counts": {"consistency_judged": 5, "inconsistent": 3, "n": 5}}}
    assert ir_of_judged(b) == pytest.approx(5 / 15)
    assert math.isnan(ir_of_judged({"a": {"counts": {"consistency_judged": 0, "inconsistent": 0}}}))
