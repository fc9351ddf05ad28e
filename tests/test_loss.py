"""Policy loss: a hand-computed example, gradients by finite differences, masking invariance."""

from __future__ import annotations

import math

import pytest
import torch

from fgrpo_core.config import FGRPOParams
from fgrpo_core.loss import policy_loss as _policy_loss

INF, NAN = float("inf"), float("nan")

_P = FGRPOParams()


def policy_loss(*args, **kw):
    """The loss with the params' defaults (the paper's values) unless a test says otherwise, as the
    trainer passes them (policy_loss itself has no defaults)."""
    return _policy_loss(*args, **{"clip_low": _P.clip_low, "clip_high": _P.clip_high, "beta": _P.beta,
                                  "aggregation": _P.loss_aggregation, **kw})


def _hand_case():
    """2 sequences x 3 tokens; sequence 0's last position is padding (holds garbage)."""
    ratios = torch.tensor([[1.5, 0.9, 1.0], [0.5, 1.0, 1.2]], dtype=torch.float64)
    old = torch.full((2, 3), -1.0, dtype=torch.float64)
    logp = old + ratios.log()
    ref = logp.clone()
    ref[1, 1] += math.log(2.0)  # one token with ref - logp = ln 2
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    # garbage at the masked position: must change nothing
    logp[0, 2], old[0, 2], ref[0, 2] = INF, NAN, -INF
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    return logp, old, ref, adv, mask


# Per token (eps_low 0.2, eps_high 0.28):
#  seq 0, A = +1:  rho 1.5 -> min(1.5, clip 1.28) = 1.28 -> pg -1.28 (high clip binds)
#                  rho 0.9 -> min(0.9, 0.9)            -> pg -0.9
#  seq 1, A = -2:  rho 0.5 -> min(-1.0, 0.8 * -2 = -1.6) -> pg 1.6 (low clip binds)
#                  rho 1.0 -> pg 2.0;   rho 1.2 -> min(-2.4, -2.4) -> pg 2.4
#  k3 KL: only seq 1 token 1, d = ln 2: e^d - d - 1 = 2 - ln 2 - 1 = 0.306853
#  sum pg = -1.28 - 0.9 + 1.6 + 2.0 + 2.4 = 3.82 over 5 tokens
K3 = 1 - math.log(2.0)


@pytest.mark.parametrize(
    "aggregation, pg, kl_agg",
    [
        ("token_mean", 3.82 / 5, K3 / 5),  # 0.764, 0.061371
        ("sequence_mean", ((-1.28 - 0.9) / 2 + 6.0 / 3) / 2, (0 + K3 / 3) / 2),  # (-1.09 + 2) / 2 = 0.455
        ("fixed_length", 3.82 / (2 * 4), K3 / (2 * 4)),  # max_length 4: 0.4775
    ],
)
def test_hand_computed(aggregation, pg, kl_agg):
    logp, old, ref, adv, mask = _hand_case()
    loss, st = policy_loss(logp, old, ref, adv, mask, beta=0.01, aggregation=aggregation, max_length=4)
    assert loss.item() == pytest.approx(pg + 0.01 * kl_agg, abs=1e-12)
    assert st.pg_loss == pytest.approx(pg, abs=1e-12)
    assert st.kl == pytest.approx(K3 / 5, abs=1e-12)  # the stat is always a token mean
    assert (st.clip_frac_low, st.clip_frac_high) == pytest.approx((0.2, 0.2))  # 1 token of 5 each
    assert st.ratio_mean == pytest.approx(5.1 / 5) and (st.ratio_min, st.ratio_max) == pytest.approx((0.5, 1.5))
    assert (st.tokens, st.sequences) == (5, 2)


def test_clipped_tokens_get_no_policy_gradient():
    logp, old, ref, adv, mask = _hand_case()
    logp.requires_grad_(True)
    loss, _ = policy_loss(logp, old, ref, adv, mask, beta=0.0)
    (g,) = torch.autograd.grad(loss, logp)
    # unclipped token: d/dlogp of -A rho / 5 = -A rho / 5; seq 0 token 1: -(1)(0.9)/5 = -0.18
    assert g[0, 0] == 0 and g[1, 0] == 0  # the two clipped tokens
    assert g[0, 1].item() == pytest.approx(-0.18) and g[1, 2].item() == pytest.approx(2 * 1.2 / 5)
    assert g[0, 2] == 0  # padding


def _random_case(seed, n=4, t=6):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen, dtype=torch.float64) * 3
    logp = old + (torch.rand(n, t, generator=gen, dtype=torch.float64) - 0.5) * 0.6  # some clip
    ref = old + (torch.rand(n, t, generator=gen, dtype=torch.float64) - 0.5) * 0.4
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 1, 4])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "fixed_length"])
def test_gradcheck_finite_differences(aggregation):
    logp, old, ref, adv, mask = _random_case(0)
    logp.requires_grad_(True)

    def f(lp):
        return policy_loss(lp, old, ref, adv, mask, beta=0.1, aggregation=aggregation, max_length=8)[0]

    assert torch.autograd.gradcheck(f, (logp,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "fixed_length"])
def test_masked_positions_never_change_loss_or_gradient(aggregation):
    logp, old, ref, adv, mask = _random_case(1)

    def run(lp, o, r):
        lp = lp.clone().requires_grad_(True)
        loss, _ = policy_loss(lp, o, r, adv, mask, aggregation=aggregation, max_length=8)
        loss.backward()
        return loss.detach(), lp.grad

    base_loss, base_grad = run(logp, old, ref)
    for junk in (INF, -INF, NAN, 1e30, 0.0):
        lp, o, r = logp.clone(), old.clone(), ref.clone()
        lp[~mask], o[~mask], r[~mask] = junk, -junk if junk == junk else junk, junk
        loss, grad = run(lp, o, r)
        assert torch.equal(loss, base_loss), junk
        assert torch.equal(grad, base_grad), junk
        assert torch.equal(grad[~mask], torch.zeros(int((~mask).sum()), dtype=torch.float64))


@pytest.mark.parametrize("aggregation, denominator", [("token_mean", 14.0), ("sequence_mean", 4.0), ("fixed_length", 32.0)])
def test_micro_batches_add_up_with_a_global_denominator(aggregation, denominator):
    # lengths 6 + 3 + 1 + 4 = 14 tokens, 4 sequences, 4 * max_length 8 = 32
    logp, old, ref, adv, mask = _random_case(2)
    full, _ = policy_loss(logp, old, ref, adv, mask, aggregation=aggregation, max_length=8)
    parts = [
        policy_loss(logp[s], old[s], ref[s], adv[s], mask[s], aggregation=aggregation, max_length=8, denominator=denominator)[0]
        for s in (slice(0, 1), slice(1, 4))
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item(), abs=1e-12)


def test_on_policy_without_kl_is_minus_mean_advantage():
    # rho = 1 everywhere: token_mean loss = -sum_i A_i n_i / sum n_i
    logp, _, _, adv, mask = _random_case(3)
    loss, st = policy_loss(logp, logp, None, adv, mask, beta=0.0)
    n = mask.sum(1).double()
    assert loss.item() == pytest.approx(-(adv * n).sum().item() / n.sum().item(), abs=1e-12)
    assert st.kl == 0.0 and st.clip_frac == 0.0 and st.ratio_mean == 1.0


def test_bad_inputs():
    logp, old, ref, adv, mask = _random_case(4)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_loss(logp, old, None, adv, mask, beta=0.01)
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(logp, old, ref, adv[:2], mask)
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        policy_loss(logp, old[:, :2], ref, adv, mask)
    with pytest.raises(ValueError, match=r"advantages\[1\] = nan"):
        policy_loss(logp, old, ref, torch.tensor([0.0, NAN, 0.0, 0.0], dtype=torch.float64), mask)
    with pytest.raises(ValueError, match="needs max_length"):
        policy_loss(logp, old, ref, adv, mask, aggregation="fixed_length")
    with pytest.raises(ValueError, match="more than max_length 5"):
        policy_loss(logp, old, ref, adv, mask, aggregation="fixed_length", max_length=5)
    with pytest.raises(ValueError, match="unknown aggregation"):
        policy_loss(logp, old, ref, adv, mask, aggregation="sum")


def test_shape_errors_name_the_tensor():
    """Each misshapen input is named with both shapes (mutation testing found these messages unread)."""
    logp, old, ref, adv, mask = _random_case(4)
    kw = dict(clip_low=0.2, clip_high=0.28, beta=0.01, aggregation="token_mean")
    shape = tuple(logp.shape)
    with pytest.raises(ValueError, match=rf"^ref_logprobs has shape \({shape[0]}, 2\), logprobs has \({shape[0]}, {shape[1]}\)$"):
        policy_loss(logp, old, ref[:, :2], adv, mask, **kw)
    with pytest.raises(ValueError, match=rf"^mask has shape \({shape[0]}, 2\), logprobs has"):
        policy_loss(logp, old, ref, adv, mask[:, :2], **kw)
    with pytest.raises(ValueError, match=r"^logprobs must be \[N, T\], got \(" + str(shape[0] * shape[1]) + r",\)$"):
        policy_loss(logp.flatten(), old, ref, adv, mask, **kw)


def test_all_masked_gives_zero_loss_with_a_graph():
    logp, old, ref, adv, mask = _random_case(5)
    logp.requires_grad_(True)
    loss, st = policy_loss(logp, old, ref, adv, torch.zeros_like(mask))
    assert loss.item() == 0.0 and st.tokens == 0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))
