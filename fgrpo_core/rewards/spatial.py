"""Spatial grounding R_G (docs/method.md#rewards): Hungarian matching of boxes scored by CIoU.

    CIoU(p, g) = IoU(p, g) - rho^2(p, g) / c^2(p, g) - alpha * v          (Zheng et al. 2020)
        rho^2 = squared distance of the box centres, c^2 = squared diagonal of the smallest
        box enclosing both, v = 4/pi^2 (atan(w_g/h_g) - atan(w_p/h_p))^2,
        alpha = v / (1 - IoU + v)   (0 when the boxes coincide: 0/0)
    S = max(CIoU, 0)                                               [N_pred, N_gt]
    R_G = max over one-to-one matchings of  sum_matched S  /  max(N_pred, N_gt)

Choices **[ours]** (the clip and the rest: docs/method.md#rewards):
- The matching maximises the *clipped* score S, so R_G is exactly the best achievable value of
  the reward's own sum (matching on raw CIoU can trade a positive overlap away to avoid a very
  negative pair). Unmatched boxes on either side count in the denominator: citing extra boxes
  or missing objects both lower R_G.
- NaN (not applicable) when the sample has no ground-truth box; 0 when it has some and the
  model cites none.
- A predicted box that is not finite, has x2 <= x1 or y2 <= y1 (zero or negative area), or has
  a coordinate beyond ``MAX_COORD`` is invalid: its scores are 0, it still counts in N_pred,
  and nothing raises. An invalid *ground-truth* box is a data error and raises ``ValueError``.
- Boxes are (x1, y1, x2, y2) in absolute pixels of the image the model saw (after the
  processor's resize); predictions and ground truth must share that frame (docs/method.md#box-coordinate-frame).

Speed (``bench/rewards.py``): ``spatial_grounding_batch`` reads all boxes of all rollouts in one
pass (a ground-truth list shared by the G rollouts of a prompt once), groups rollouts by
(N_pred, N_gt) rounded up to even (padding boxes are NaN and score 0), tests overlap for every
pair of a group at once and evaluates CIoU only on overlapping pairs (elsewhere IoU = 0, so
CIoU <= 0 and S = 0). Most matchings are then proved optimal without the Hungarian solver:
when the positive row maxima of S fall in distinct columns, taking them is a matching whose
value equals the upper bound sum_i max_j S_ij (likewise for columns). Only the remaining
rollouts call ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

BoxesLike = Sequence[Sequence[float]] | np.ndarray  # [K, 4] as (x1, y1, x2, y2)

MAX_COORD = 1e7  # pixels; beyond this a coordinate is garbage (and squares would overflow)
_DUMMY_BOX = np.array([0.0, 0.0, 1.0, 1.0])  # stands in for invalid boxes, then masked to 0


def _as_array(boxes: BoxesLike, what: str) -> np.ndarray:
    """[K, 4] float64; raises ValueError for a wrong shape (a programming error, not a value)."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: cannot read boxes as numbers ({err})") from None
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape [K, 4], got {arr.shape}")
    return arr


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """[..., K] bool: finite, |coord| <= MAX_COORD, x2 > x1, y2 > y1 and a non-zero area."""
    with np.errstate(invalid="ignore", over="ignore"):
        bounded = (np.abs(boxes) <= MAX_COORD).all(-1)  # False for NaN and inf too
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        return bounded & (w > 0) & (h > 0) & (w * h > 0)  # w * h catches underflow to 0


def _check_gt(gt: np.ndarray, what: str) -> None:
    ok = valid_boxes(gt)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{what}: ground-truth box {i} = {gt[i].tolist()} is invalid "
            "(needs finite x1 < x2, y1 < y2 within MAX_COORD)"
        )


def _ciou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """CIoU of valid boxes, elementwise over broadcast shapes: [..., 4] x [..., 4] -> [...]."""
    px1, py1, px2, py2 = (pred[..., i] for i in range(4))
    gx1, gy1, gx2, gy2 = (gt[..., i] for i in range(4))
    pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
    # Signed overlap per axis; the enclosing box's side is then w_p + w_g - overlap.
    dx = np.minimum(px2, gx2) - np.maximum(px1, gx1)
    dy = np.minimum(py2, gy2) - np.maximum(py1, gy1)
    cw, ch = (pw + gw) - dx, (ph + gh) - dy
    inter = np.maximum(dx, 0.0) * np.maximum(dy, 0.0)
    iou = inter / ((pw * ph + gw * gh) - inter)
    rho2 = ((px1 + px2) - (gx1 + gx2)) ** 2 + ((py1 + py2) - (gy1 + gy2)) ** 2  # 4 x centre distance^2
    v = (4 / math.pi**2) * (np.arctan(gw / gh) - np.arctan(pw / ph)) ** 2  # arctan per box
    denom = (1.0 - iou) + v
    alpha_v = np.divide(v * v, denom, out=np.zeros_like(v), where=denom > 0)  # alpha * v
    return iou - rho2 / (4 * (cw * cw + ch * ch)) - alpha_v


def ciou_matrix(pred: BoxesLike, gt: BoxesLike) -> np.ndarray:
    """[N, M] Complete IoU of predicted vs ground-truth boxes; rows of invalid predictions are 0."""
    p, g = _as_array(pred, "pred"), _as_array(gt, "gt")
    _check_gt(g, "gt")
    ok = valid_boxes(p)  # [N]
    c = _ciou(np.where(ok[:, None], p, _DUMMY_BOX)[:, None, :], g[None, :, :])  # [N, M]
    return np.where(ok[:, None], c, 0.0)


def _clipped_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """S = max(CIoU, 0) [R, N, M] for pred [R, N, 4], gt [R, M, 4]; NaN boxes (invalid or
    padding) score 0.

    Where two boxes do not overlap, IoU = 0 and CIoU = -rho^2/c^2 - alpha v <= 0, so S = 0:
    the full formula runs only on overlapping pairs. For valid boxes "overlap" is
    p_x2 > g_x1 and g_x2 > p_x1 (same for y); every comparison with a NaN box is False.
    """
    px1, py1, px2, py2 = np.ascontiguousarray(np.moveaxis(pred, -1, 0))[:, :, :, None]  # [R, N, 1]
    gx1, gy1, gx2, gy2 = np.ascontiguousarray(np.moveaxis(gt, -1, 0))[:, :, None, :]  # [R, 1, M]
    r, i, j = np.nonzero((px2 > gx1) & (gx2 > px1) & (py2 > gy1) & (gy2 > py1))  # [R, N, M]
    s = np.zeros(pred.shape[:2] + gt.shape[1:2])
    s[r, i, j] = np.maximum(_ciou(pred[r, i], gt[r, j]), 0.0)
    return s


def _best_matching_values(s: np.ndarray) -> np.ndarray:
    """[R] max over matchings of sum S, for S [R, N, M] >= 0 (certificate, else Hungarian)."""
    r, n, m = s.shape
    row_arg, col_arg = s.argmax(2), s.argmax(1)  # [R, N], [R, M]
    row_max = np.take_along_axis(s, row_arg[:, :, None], 2)[:, :, 0]  # [R, N]
    col_max = np.take_along_axis(s, col_arg[:, None, :], 1)[:, 0, :]  # [R, M]

    def distinct(arg: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
        # [R] True when the positive maxima of each rollout sit in pairwise distinct slots
        slot = (np.arange(r)[:, None] * size + arg)[pos]
        hits = np.bincount(slot, minlength=r * size).reshape(r, size)
        return (hits <= 1).all(1)

    by_rows = distinct(row_arg, row_max > 0, m)
    by_cols = distinct(col_arg, col_max > 0, n)
    out = np.where(by_rows, row_max.sum(1), col_max.sum(1))
    hard = np.flatnonzero(~by_rows & ~by_cols)
    if len(hard):
        pairs = [linear_sum_assignment(s[i], maximize=True) for i in hard]
        k = min(n, m)  # every matching has min(N, M) pairs
        rows, cols = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        out[hard] = s[np.repeat(hard, k), rows, cols].reshape(len(hard), k).sum(1)
    return out


def _flatten(
    per_rollout: Sequence[BoxesLike], what: str, share: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All boxes as one [K, 4] array, and each rollout's offset and count into it ([R], [R]).

    One pass over the numbers, no per-rollout numpy call. ``share=True`` reads a box list that
    several rollouts pass as the same object once (the G rollouts of a prompt share their
    sample's ground truth). A shape problem is reported with the rollout's index.
    """
    if share:
        ids = np.fromiter(map(id, per_rollout), dtype=np.uint64, count=len(per_rollout))
        _, first, which = np.unique(ids, return_index=True, return_inverse=True)
        distinct = [per_rollout[i] for i in first.tolist()]
    else:
        distinct, which = list(per_rollout), None
    try:
        counts = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
        boxes = list(chain.from_iterable(distinct))
        if set(map(len, boxes)) - {4}:
            raise ValueError("a box does not have 4 numbers")
        arr = np.fromiter(chain.from_iterable(boxes), dtype=np.float64, count=4 * len(boxes))
    except (TypeError, ValueError):
        for i, b in enumerate(per_rollout):  # find and name the culprit
            _as_array(b, f"{what}[{i}]")
        raise ValueError(f"{what}: cannot read the boxes as [K, 4] numbers") from None
    starts = np.cumsum(counts) - counts
    if which is not None:
        starts, counts = starts[which], counts[which]
    return arr.reshape(-1, 4), starts, counts


def spatial_grounding_batch(preds: Sequence[BoxesLike], gts: Sequence[BoxesLike]) -> np.ndarray:
    """[R] R_G of many rollouts (NaN where a sample has no ground-truth box).

    Rollouts of one prompt may pass the same ground-truth object; it is then read once.
    """
    if len(preds) != len(gts):
        raise ValueError(f"preds has {len(preds)} rollouts but gts has {len(gts)}")
    p_flat, p_start, n = _flatten(preds, "preds")  # [Kp, 4], [R], [R]
    g_flat, g_start, m = _flatten(gts, "gts", share=True)  # [Kg, 4], [R], [R]
    p_flat[~valid_boxes(p_flat)] = np.nan  # an invalid prediction overlaps nothing: scores 0
    g_ok = valid_boxes(g_flat)
    if not g_ok.all():
        k = int(np.flatnonzero(~g_ok)[0])
        i = int(np.flatnonzero((g_start <= k) & (k < g_start + m))[0])  # a rollout holding box k
        _check_gt(g_flat[g_start[i] : g_start[i] + m[i]], f"gts[{i}]")

    # A NaN box appended at the end is what padding points to; it overlaps nothing.
    p_padded, g_padded = (np.concatenate([a, np.full((1, 4), np.nan)]) for a in (p_flat, g_flat))

    out = np.where(m == 0, np.nan, 0.0)  # no ground truth: NaN; ground truth, no boxes: 0
    todo = np.flatnonzero((n > 0) & (m > 0))
    # Buckets of padded shape (sides rounded up to even): a few dozen numpy calls per batch
    # at the cost of < 1 padding box per side. Padding scores 0, which changes no matching's value.
    pad_n, pad_m = _bucket_size(n[todo]), _bucket_size(m[todo])
    key = pad_n * (int(pad_m.max(initial=0)) + 1) + pad_m
    order = np.argsort(key, kind="stable")
    todo, key = todo[order], key[order]
    for idx in np.split(todo, np.flatnonzero(np.diff(key)) + 1):
        if not len(idx):
            continue
        bn, bm = int(_bucket_size(n[idx[:1]])[0]), int(_bucket_size(m[idx[:1]])[0])
        p = _gather(p_padded, p_start[idx], n[idx], bn)  # [K, bn, 4], NaN padding
        g = _gather(g_padded, g_start[idx], m[idx], bm)  # [K, bm, 4]
        out[idx] = _best_matching_values(_clipped_scores(p, g)) / np.maximum(n[idx], m[idx])
    return out


def _bucket_size(k: np.ndarray) -> np.ndarray:
    """Padded side length: 1 and 2 stay, larger counts round up to even (3 -> 4, 9 -> 10)."""
    return np.where(k <= 2, k, k + (k % 2))


def _gather(padded: np.ndarray, start: np.ndarray, count: np.ndarray, size: int) -> np.ndarray:
    """Rollouts' boxes padded to ``size`` with the last row of ``padded`` (a NaN box): [K, size, 4]."""
    j = np.arange(size)
    return padded[np.where(j < count[:, None], start[:, None] + j, len(padded) - 1)]


def spatial_grounding(pred: BoxesLike, gt: BoxesLike) -> float:
    """R_G in [0, 1] of one rollout, NaN when there is no ground-truth box."""
    return float(spatial_grounding_batch([pred], [gt])[0])
