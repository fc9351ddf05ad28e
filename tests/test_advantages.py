"""Advantages: hand-computed values, NaN masks, groups by id, the ablation switch."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from fgrpo_core.advantages import (
    batch_whiten,
    compute_advantages,
    decoupled_advantages,
    decoupled_advantages_by_id,
    grpo_advantages,
    grpo_advantages_by_id,
    group_zscore,
    TaskRewards,
    shaped_reward,
    signal_advantages,
)
from fgrpo_core.config import AdvantageMode

NAN = float("nan")
EPS = 1e-4
T = torch.tensor


def approx(x, abs=1e-6):
    return pytest.approx(x, abs=abs)


# ------------------------------------------------------------------------------------------
# Hand-computed
# ------------------------------------------------------------------------------------------
def test_group_zscore_std_convention():
    r = T([[1.0, 0.0, 0.0, 1.0]])
    # mean 0.5; deviations +-0.5.
    # unbiased (default): std = sqrt(4 * 0.25 / 3) = 0.577350 -> z = 0.5 / 0.577450 = 0.865875
    assert grpo_advantages(r)[0].tolist() == approx([0.865875, -0.865875, -0.865875, 0.865875])
    # population: std = sqrt(4 * 0.25 / 4) = 0.5 -> z = 0.5 / 0.5001 = 0.999800
    assert grpo_advantages(r, unbiased=False)[0].tolist() == approx([0.9998, -0.9998, -0.9998, 0.9998])


def test_nan_aware_group_statistics():
    r = T([[1.0, NAN, 0.0, 0.0]])
    # applicable (1, 0, 0): mean 1/3; unbiased var = ((2/3)^2 + 2 (1/3)^2) / 2 = 1/3,
    # std = 0.577350; z = (2/3) / 0.577450 = 1.154501, -(1/3) / 0.577450 = -0.577250; NaN -> 0
    assert group_zscore(r.view(-1), [0] * 4).tolist() == approx([1.154501, 0.0, -0.577250, -0.577250])


def test_small_and_constant_groups_give_zero():
    r = T(
        [
            [1.0, NAN, NAN],  # one applicable value -> 0
            [NAN, NAN, NAN],  # none -> 0
            [0.7, 0.7, 0.7],  # constant -> exactly 0 (dev is 0, not 0/eps noise)
            [0.7, NAN, 0.7],  # constant among the applicable ones -> 0
        ]
    )
    z = grpo_advantages(r)
    assert torch.equal(z, torch.zeros_like(z))


def test_decoupled_hand_computed():
    task = T([[1.0, 0.0], [1.0, 1.0]])
    cons = T([[0.0, 1.0], [NAN, 1.0]])
    # Row 0: z_task = (+0.5, -0.5) / (sqrt(0.5) + 1e-4) = +-0.5 / 0.707207 = (+0.707007, -0.707007)
    #        z_C    = (-0.707007, +0.707007);  A = z_task + 2 z_C = (-0.707007, +0.707007)
    # Row 1: task constant -> 0; C has one applicable value -> 0;  A = (0, 0)
    a = decoupled_advantages(task, {"consistency": cons}, {"consistency": 2.0}, whiten=False)
    assert a.flatten().tolist() == approx([-0.707007, 0.707007, 0.0, 0.0])
    # Whitening over all 4: mean 0, unbiased std = sqrt(2 * 0.707007^2 / 3) = 0.577269;
    # A / (0.577269 + 1e-4) = +-1.224533
    w = decoupled_advantages(task, {"consistency": cons}, {"consistency": 2.0})
    assert w.flatten().tolist() == approx([-1.224533, 1.224533, 0.0, 0.0])


def test_two_rollouts_joint_vs_decoupled():
    # Rollout a has (R_task, R_C) = (1, 0), rollout b has (0, 1) (NeMo-RL PR#2681's case).
    task, cons = T([[1.0, 0.0]]), {"consistency": T([[0.0, 1.0]])}
    # Joint: one summed reward 1 + 0 = 0 + 1 for both -> identical rewards -> both advantages 0.
    assert torch.equal(grpo_advantages(task + cons["consistency"]), torch.zeros(1, 2))
    # Decoupled, lambda_C = 2 (the constraint is violated, lambda has risen):
    # A = z_task + 2 z_C = (0.707 - 1.414, -0.707 + 1.414) = (-0.707, +0.707) before whitening:
    # the constraint-satisfying rollout b is preferred; with lambda_C = 0.5 it is rollout a.
    hi = compute_advantages("fgrpo", task, cons, {"consistency": 2.0}, whiten=False)
    lo = compute_advantages("fgrpo", task, cons, {"consistency": 0.5}, whiten=False)
    assert hi[0, 1] > 0 > hi[0, 0] and lo[0, 0] > 0 > lo[0, 1]
    assert hi.flatten().tolist() == approx([-0.707007, 0.707007])


# ------------------------------------------------------------------------------------------
# Invariances
# ------------------------------------------------------------------------------------------
def _random_case(seed: int, b: int = 6, g: int = 5):
    gen = torch.Generator().manual_seed(seed)
    task = (torch.rand(b, g, generator=gen) * 2).round() / 2  # {0, 0.5, 1}
    cons = {}
    for name, p_nan in (("consistency", 0.4), ("semantic", 0.4), ("spatial", 0.2)):
        r = torch.rand(b, g, generator=gen)
        if name == "consistency":
            r = r.round()
        cons[name] = torch.where(torch.rand(b, g, generator=gen) < p_nan, NAN, r)
    return task, cons


LAMBDAS = {"consistency": 1.5, "semantic": 0.5, "spatial": 2.0}


def test_nan_never_poisons_the_batch():
    # ms-swift#8123: one NaN made every decoupled advantage NaN.
    for seed in range(5):
        task, cons = _random_case(seed)
        assert torch.isfinite(decoupled_advantages(task, cons, LAMBDAS)).all()


def test_masked_rollouts_do_not_enter_the_statistics():
    # Removing the rollouts that are NaN for a constraint leaves that constraint's z-scores of
    # all other rollouts unchanged, and the removed ones had z = 0.
    task, cons = _random_case(7)
    ids = torch.arange(6).repeat_interleave(5)
    r = cons["semantic"].flatten()
    z_all = group_zscore(r, ids)
    keep = ~torch.isnan(r)
    assert torch.equal(z_all[~keep], torch.zeros(int((~keep).sum()), dtype=torch.float64))
    torch.testing.assert_close(group_zscore(r[keep], ids[keep]), z_all[keep], rtol=0, atol=1e-12)


def test_constant_constraint_contributes_nothing_to_its_group():
    task, cons = _random_case(3)
    cons["spatial"][2] = 0.4  # group 2: spatial constant
    cons["semantic"][2] = T([0.9, NAN, 0.9, 0.9, NAN])  # constant where applicable
    z = signal_advantages(task.flatten(), {k: v.flatten() for k, v in cons.items()}, torch.arange(6).repeat_interleave(5))
    assert torch.equal(z["spatial"][10:15], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(z["semantic"][10:15], torch.zeros(5, dtype=torch.float64))
    # so the group's advantage (before whitening) is unchanged by lambda_G and lambda_S
    a1 = decoupled_advantages(task, cons, LAMBDAS, whiten=False)
    a2 = decoupled_advantages(task, cons, {**LAMBDAS, "spatial": 4.0, "semantic": 3.0}, whiten=False)
    assert torch.equal(a1[2], a2[2])


def _loop_reference(task, cons, lambdas, eps=EPS, unbiased=True, whiten=True):
    """Decoupled advantages with plain Python loops over groups (the vectorised form's check)."""
    b, g = task.shape
    a = [[0.0] * g for _ in range(b)]
    signals = [(task, 1.0)] + [(cons[k], lambdas[k]) for k in cons]
    for i in range(b):
        for sig, w in signals:
            vals = [(j, float(sig[i, j])) for j in range(g) if not math.isnan(float(sig[i, j]))]
            if len(vals) < 2:
                continue
            xs = [v for _, v in vals]
            mu = sum(xs) / len(xs)
            sd = statistics.stdev(xs) if unbiased else statistics.pstdev(xs)
            for j, v in vals:
                a[i][j] += w * (v - mu) / (sd + eps)
    flat = [x for row in a for x in row]
    if whiten:
        mu = sum(flat) / len(flat)
        sd = statistics.stdev(flat) if unbiased else statistics.pstdev(flat)
        flat = [(x - mu) / (sd + eps) for x in flat]
    return torch.tensor(flat, dtype=torch.float64).view(b, g)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("whiten", [True, False])
def test_vectorised_equals_loop(unbiased, whiten):
    for seed in range(4):
        task, cons = _random_case(seed, b=8, g=5)
        got = decoupled_advantages(task.double(), {k: v.double() for k, v in cons.items()}, LAMBDAS, whiten=whiten, unbiased=unbiased)
        torch.testing.assert_close(got, _loop_reference(task, cons, LAMBDAS, unbiased=unbiased, whiten=whiten), rtol=0, atol=1e-10)


def test_whitening_scales_to_unit_std():
    task, cons = _random_case(11)
    a = decoupled_advantages(task.double(), {k: v.double() for k, v in cons.items()}, LAMBDAS)
    assert a.mean().item() == approx(0.0, abs=1e-12)
    assert a.std().item() == approx(1.0, abs=1e-3)  # 1 up to the eps in std + eps
    assert torch.equal(batch_whiten(torch.zeros(5)), torch.zeros(5, dtype=torch.float64))
    assert torch.equal(batch_whiten(T([3.0])), T([0.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------
# Groups by id (docs/method.md#groups-by-id: never by reshape)
# ------------------------------------------------------------------------------------------
def test_uneven_and_singleton_groups():
    # Groups: "p" has 3 rollouts, "q" 1 (singleton), "r" 2, interleaved.
    ids = ["p", "r", "q", "p", "r", "p"]
    rewards = T([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    a = grpo_advantages_by_id(rewards, ids)
    # p: (1, 0, 0): mean 1/3, unbiased std sqrt(1/3) -> (1.154501, -0.577250, -0.577250)
    # r: (0, 1): mean 1/2, std sqrt(1/2) = 0.707107 -> -+0.5 / 0.707207 = -+0.707007
    # q: singleton -> 0
    assert a.tolist() == approx([1.154501, -0.707007, 0.0, -0.577250, 0.707007, -0.577250])
    # A reshape into [2, 3] would have mixed prompts: the by-id answer differs from it.
    assert not torch.allclose(a, grpo_advantages(rewards.view(2, 3)).flatten())


def test_by_id_equals_rows_and_is_permutation_equivariant():
    task, cons = _random_case(5)
    flat_ids = torch.arange(6).repeat_interleave(5) * 7 + 3  # arbitrary integer ids
    rows = decoupled_advantages(task, cons, LAMBDAS)
    flat = decoupled_advantages_by_id(task.flatten(), {k: v.flatten() for k, v in cons.items()}, LAMBDAS, flat_ids)
    torch.testing.assert_close(flat, rows.flatten(), rtol=0, atol=1e-6)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    shuffled = decoupled_advantages_by_id(
        task.flatten()[perm], {k: v.flatten()[perm] for k, v in cons.items()}, LAMBDAS, flat_ids[perm]
    )
    torch.testing.assert_close(shuffled, flat[perm], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------
# The ablation switch
# ------------------------------------------------------------------------------------------
# One row per case: (R_acc, R_fmt, R_C, R_G) -> reward_sum, gate  (docs/method.md#ablation-rows)
#   reward_sum = 1/3 R_acc + 1/3 R_acc R_C + 1/3 R_fmt R_G      gate = 1/2 R_acc R_C + 1/2 R_fmt R_G
#   R_C NaN -> 0 (no verdict "consistent", no bonus); R_G NaN (no ground-truth box) -> 1 (the term is R_fmt)
SHAPED_CASES = [
    # acc fmt  R_C  R_G     reward_sum                        gate
    (1.0, 1.0, 1.0, 0.5, (1 + 1 + 0.5) / 3,             0.5 * 1 + 0.5 * 0.5),   # 0.833333, 0.75
    (1.0, 1.0, 1.0, 0.0, (1 + 1 + 0) / 3,               0.5 * 1 + 0.0),         # right, R_G = 0: 0.666667, 0.5 (paper: not 0)
    (1.0, 1.0, 0.0, 1.0, (1 + 0 + 1) / 3,               0.0 + 0.5 * 1),         # inconsistent: 0.666667, 0.5
    (0.0, 1.0, NAN, 0.8, (0 + 0 + 0.8) / 3,             0.0 + 0.5 * 0.8),       # wrong (R_C n/a): 0.266667, 0.4
    (1.0, 0.0, 1.0, 0.9, (1 + 1 + 0) / 3,               0.5 * 1 + 0.0),         # malformed: R_fmt R_G = 0
    (1.0, 1.0, NAN, 0.6, (1 + 0 + 0.6) / 3,             0.0 + 0.5 * 0.6),       # right, no verdict: no bonus
    (1.0, 1.0, 1.0, NAN, (1 + 1 + 1) / 3,               0.5 * 1 + 0.5 * 1),     # no boxes: term = R_fmt = 1
    (1.0, 0.0, NAN, NAN, (1 + 0 + 0) / 3,               0.0 + 0.0),             # no boxes, malformed, no verdict
    (0.0, 1.0, NAN, NAN, (0 + 0 + 1) / 3,               0.0 + 0.5 * 1),         # no boxes, wrong, well formed
    (0.0, 0.0, NAN, NAN, 0.0,                           0.0),
]


def _shaped_inputs():
    acc, fmt, c, g, want_sum, want_gate = (T([row[i] for row in SHAPED_CASES]) for i in range(6))
    task = 0.5 * acc + 0.5 * fmt
    return task, {"consistency": c, "spatial": g}, TaskRewards(acc=acc, fmt=fmt), want_sum, want_gate


def test_shaped_rewards_hand_computed():
    task, cons, parts, want_sum, want_gate = _shaped_inputs()
    assert shaped_reward(AdvantageMode.reward_sum, task, cons, parts).tolist() == approx(want_sum.tolist())
    assert shaped_reward(AdvantageMode.gate, task, cons, parts).tolist() == approx(want_gate.tolist())
    assert shaped_reward(AdvantageMode.reward_sum, task, cons, parts)[:3].tolist() == approx([0.833333, 0.666667, 0.666667])
    assert shaped_reward(AdvantageMode.gate, task, cons, parts)[:4].tolist() == approx([0.75, 0.5, 0.5, 0.4])
    # GRPO-T is R_task whatever the parts
    assert torch.equal(shaped_reward(AdvantageMode.grpo_task, task, cons, parts), task.double())
    assert torch.equal(shaped_reward(AdvantageMode.grpo_task, task, cons), task.double())
    with pytest.raises(ValueError, match="decoupled"):
        shaped_reward(AdvantageMode.fgrpo, task, cons, parts)


def test_shaped_rewards_are_normalised_jointly():
    # a group of 2: gate rewards 0.75 (row 0) and 0.5 (row 1); deviations +-0.125,
    # unbiased std = sqrt(2 * 0.125^2 / 1) = 0.176777 -> z = 0.125 / 0.176877 = +-0.706707
    task, cons, parts, _, _ = _shaped_inputs()
    two = slice(0, 2)
    a = compute_advantages("gate", task[two], {k: v[two] for k, v in cons.items()}, {}, group_ids=[0, 0],
                           parts=TaskRewards(parts.acc[two], parts.fmt[two]))
    assert a.tolist() == approx([0.706707, -0.706707])
    # the whole table as groups of 2 equals the plain GRPO z-score of the shaped reward
    ids = torch.arange(len(SHAPED_CASES)) // 2
    for mode in ("reward_sum", "gate"):
        want = grpo_advantages_by_id(shaped_reward(AdvantageMode(mode), task, cons, parts), ids)
        got = compute_advantages(mode, task, cons, {}, group_ids=ids, parts=parts)
        torch.testing.assert_close(got, want.to(got.dtype))
    # rows 1 and 2 (right with R_G = 0, vs right but inconsistent with R_G = 1) tie under both formulas
    assert compute_advantages("reward_sum", task[1:3], {k: v[1:3] for k, v in cons.items()}, {}, group_ids=[0, 0],
                              parts=TaskRewards(parts.acc[1:3], parts.fmt[1:3])).tolist() == [0.0, 0.0]


def test_breaking_the_reasoning_never_pays():
    # A right, well-formed answer whose R_C is unknown (NaN) gets no more than one judged inconsistent
    # (R_C = 0), and one without boxes (R_G NaN) no more than one with perfect boxes (R_G = 1).
    acc, fmt = T([1.0, 1.0]), T([1.0, 1.0])
    parts = TaskRewards(acc, fmt)
    for mode in (AdvantageMode.reward_sum, AdvantageMode.gate):
        r = shaped_reward(mode, acc, {"consistency": T([NAN, 0.0]), "spatial": T([0.4, 0.4])}, parts)
        assert r[0] == r[1]
        r = shaped_reward(mode, acc, {"consistency": T([1.0, 1.0]), "spatial": T([NAN, 1.0])}, parts)
        assert r[0] == r[1]


def test_shaped_rewards_need_their_inputs():
    task, cons, parts, _, _ = _shaped_inputs()
    with pytest.raises(ValueError, match=r"reward_sum needs R_acc and R_fmt"):
        compute_advantages("reward_sum", task, cons, {}, group_ids=[0] * len(task))
    with pytest.raises(ValueError, match=r"must be \['consistency', 'spatial'\].*'semantic'"):
        shaped_reward(AdvantageMode.gate, task, {**cons, "semantic": cons["spatial"]}, parts)
    with pytest.raises(ValueError, match=r"got \['consistency'\]"):
        shaped_reward(AdvantageMode.gate, task, {"consistency": cons["consistency"]}, parts)
    with pytest.raises(ValueError, match="reward 'acc' has value nan"):
        shaped_reward(AdvantageMode.gate, task, cons, TaskRewards(parts.acc * NAN, parts.fmt))


def test_every_mode_is_one_switch():
    task, cons = _random_case(2)
    parts = TaskRewards(acc=(task == 1.0).float(), fmt=(task >= 0.5).float())  # R_task = 0.5 acc + 0.5 fmt
    joint = {k: cons[k] for k in ("consistency", "spatial")}
    out = {m: compute_advantages(m, task, joint if m in (AdvantageMode.reward_sum, AdvantageMode.gate) else cons,
                                 LAMBDAS, parts=parts) for m in AdvantageMode}
    assert torch.equal(out[AdvantageMode.grpo_task], grpo_advantages(task))
    torch.testing.assert_close(out[AdvantageMode.reward_sum],
                               grpo_advantages(shaped_reward(AdvantageMode.reward_sum, task, joint, parts)).float())
    torch.testing.assert_close(out[AdvantageMode.gate],
                               grpo_advantages(shaped_reward(AdvantageMode.gate, task, joint, parts)).float())
    # fixed and adaptive lambda compute advantages the same way; only the dual step differs
    assert torch.equal(out[AdvantageMode.fgrpo_fixed], out[AdvantageMode.fgrpo])
    assert torch.equal(out[AdvantageMode.fgrpo], decoupled_advantages(task, cons, LAMBDAS))
    # and the rows really differ from each other
    assert not torch.allclose(out[AdvantageMode.grpo_task], out[AdvantageMode.fgrpo])
    assert not torch.allclose(out[AdvantageMode.reward_sum], out[AdvantageMode.gate])


def test_constraint_subset_and_flat_inputs():
    task, cons = _random_case(4)
    only_c = compute_advantages("fgrpo", task, cons, LAMBDAS, active=["consistency"])
    assert torch.equal(only_c, decoupled_advantages(task, {"consistency": cons["consistency"]}, LAMBDAS))
    ids = torch.arange(6).repeat_interleave(5)
    parts = TaskRewards(acc=(task == 1.0).float(), fmt=(task >= 0.5).float())
    flat = compute_advantages("gate", task.flatten(), {k: v.flatten() for k, v in cons.items()}, {}, group_ids=ids,
                              active=["consistency", "spatial"],
                              parts=TaskRewards(parts.acc.flatten(), parts.fmt.flatten()))
    torch.testing.assert_close(flat, compute_advantages("gate", task, cons, {}, active=["consistency", "spatial"],
                                                        parts=parts).flatten())
    with pytest.raises(ValueError, match=r"\['grounding'\]"):
        compute_advantages("fgrpo", task, cons, LAMBDAS, active=["grounding"])


def test_bad_inputs_are_clear_errors():
    task, cons = _random_case(0)
    with pytest.raises(ValueError, match=r"no lambda for constraint\(s\) \['spatial'\]"):
        decoupled_advantages(task, cons, {"consistency": 1.0, "semantic": 1.0})
    bad_task = task.clone()
    bad_task[1, 2] = NAN
    with pytest.raises(ValueError, match="reward 'task' has value nan at rollout 7"):
        decoupled_advantages(bad_task, cons, LAMBDAS)
    inf = cons["spatial"].clone()
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="reward 'spatial' has value inf at rollout 0"):
        decoupled_advantages(task, {**cons, "spatial": inf}, LAMBDAS)
    with pytest.raises(ValueError, match="shape"):
        decoupled_advantages(task, {"spatial": cons["spatial"][:, :3]}, LAMBDAS)
    with pytest.raises(ValueError, match="group_ids has 3 entries"):
        grpo_advantages_by_id(T([1.0, 0.0]), [0, 0, 1])
