"""Spatial grounding R_G (FGRPO.md section 2): Hungarian matching of boxes scored by CIoU.

    CIoU(p, g) = IoU(p, g) - rho^2(p, g) / c^2(p, g) - alpha * v          (Zheng et al. 2020)
        rho^2 = squared distance of the box centres, c^2 = squared diagonal of the smallest
        box enclosing both, v = 4/pi^2 (atan(w_g/h_g) - atan(w_p/h_p))^2,
        alpha = v / (1 - IoU + v)   (0 when the boxes coincide: 0/0)
    S = max(CIoU, 0)                                               [N_pred, N_gt]
    R_G = max over one-to-one matchings of  sum_matched S  /  max(N_pred, N_gt)

Choices **[ours]** (FGRPO.md marks the clip as ours; the rest is fixed here):
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
  processor's resize); predictions and ground truth must share that frame (PITFALLS.md).

Speed: ``spatial_grounding_batch`` groups rollouts by (N_pred, N_gt), computes every CIoU of a
group in one vectorised numpy expression, and proves most matchings optimal without the
Hungarian solver: when the row-wise maxima of S fall in distinct columns, taking them is a
matching whose value equals the upper bound sum_i max_j S_ij, so it is optimal (likewise for
columns). Only the remaining rollouts call ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

BoxesLike = Sequence[Sequence[float]] | np.ndarray  # [K, 4] as (x1, y1, x2, y2)

MAX_COORD = 1e7  # pixels; beyond this a coordinate is garbage (and squares would overflow)
_DUMMY_BOX = np.array([0.0, 0.0, 1.0, 1.0])  # stands in for invalid boxes before masking


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
        finite = np.isfinite(boxes).all(-1) & (np.abs(boxes) <= MAX_COORD).all(-1)
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        return finite & (w > 0) & (h > 0) & (w * h > 0)  # w * h catches underflow to 0


def _check_gt(gt: np.ndarray, what: str) -> None:
    ok = valid_boxes(gt)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{what}: ground-truth box {i} = {gt[i].tolist()} is invalid "
            "(needs finite x1 < x2, y1 < y2 within MAX_COORD)"
        )


def _ciou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """CIoU of valid boxes, batched: pred [R, N, 4], gt [R, M, 4] -> [R, N, M] float64."""
    px1, py1, px2, py2 = (pred[..., i] for i in range(4))  # [R, N]
    gx1, gy1, gx2, gy2 = (gt[..., i] for i in range(4))  # [R, M]
    pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
    # Per-box terms once, pairwise terms by broadcasting [R, N, 1] against [R, 1, M].
    p_area, g_area = pw * ph, gw * gh
    p_atan, g_atan = np.arctan(pw / ph), np.arctan(gw / gh)
    p_cx, p_cy, g_cx, g_cy = px1 + px2, py1 + py2, gx1 + gx2, gy1 + gy2  # 2x the centres

    def pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return a[:, :, None], b[:, None, :]

    lo_x, hi_x = np.maximum(*pair(px1, gx1)), np.minimum(*pair(px2, gx2))
    lo_y, hi_y = np.maximum(*pair(py1, gy1)), np.minimum(*pair(py2, gy2))
    inter = np.clip(hi_x - lo_x, 0.0, None) * np.clip(hi_y - lo_y, 0.0, None)  # [R, N, M]
    union = p_area[:, :, None] + g_area[:, None, :] - inter
    iou = inter / union
    cw = np.maximum(*pair(px2, gx2)) - np.minimum(*pair(px1, gx1))  # enclosing box
    ch = np.maximum(*pair(py2, gy2)) - np.minimum(*pair(py1, gy1))
    rho2 = ((p_cx[:, :, None] - g_cx[:, None, :]) ** 2 + (p_cy[:, :, None] - g_cy[:, None, :]) ** 2) / 4
    v = (4 / math.pi**2) * (g_atan[:, None, :] - p_atan[:, :, None]) ** 2
    denom = 1.0 - iou + v
    alpha = np.divide(v, denom, out=np.zeros_like(v), where=denom > 0)
    return iou - rho2 / (cw * cw + ch * ch) - alpha * v


def _scores(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw CIoU with invalid predicted rows set to 0, and S = max(CIoU, 0). Shapes [R, N, M]."""
    ok = valid_boxes(pred)  # [R, N]
    safe = np.where(ok[..., None], pred, _DUMMY_BOX)
    c = np.where(ok[..., None], _ciou(safe, gt), 0.0)
    return c, np.clip(c, 0.0, None)


def ciou_matrix(pred: BoxesLike, gt: BoxesLike) -> np.ndarray:
    """[N, M] Complete IoU of predicted vs ground-truth boxes; rows of invalid predictions are 0."""
    p, g = _as_array(pred, "pred"), _as_array(gt, "gt")
    _check_gt(g, "gt")
    if len(p) == 0 or len(g) == 0:
        return np.zeros((len(p), len(g)))
    return _scores(p[None], g[None])[0][0]


def _best_matching_values(s: np.ndarray) -> np.ndarray:
    """[R] max over matchings of sum S, for S [R, N, M] >= 0 (certificate, else Hungarian)."""
    r, n, m = s.shape
    row_max, row_arg = s.max(2), s.argmax(2)  # [R, N]
    col_max, col_arg = s.max(1), s.argmax(1)  # [R, M]

    def distinct(arg: np.ndarray, pos: np.ndarray, size: int) -> np.ndarray:
        # [R] True when the positive maxima of each rollout sit in pairwise distinct slots
        hits = np.zeros((r, size), dtype=np.int64)
        rows = np.broadcast_to(np.arange(r)[:, None], arg.shape)
        np.add.at(hits, (rows[pos], arg[pos]), 1)
        return (hits <= 1).all(1)

    by_rows = distinct(row_arg, row_max > 0, m)
    by_cols = distinct(col_arg, col_max > 0, n)
    out = np.where(by_rows, row_max.sum(1), col_max.sum(1))
    for i in np.flatnonzero(~by_rows & ~by_cols):
        ri, ci = linear_sum_assignment(s[i], maximize=True)
        out[i] = s[i][ri, ci].sum()
    return out


def spatial_grounding_batch(preds: Sequence[BoxesLike], gts: Sequence[BoxesLike]) -> np.ndarray:
    """[R] R_G of many rollouts (NaN where a sample has no ground-truth box)."""
    if len(preds) != len(gts):
        raise ValueError(f"preds has {len(preds)} rollouts but gts has {len(gts)}")
    out = np.full(len(preds), np.nan)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    p_arrays, g_arrays = [], []
    for i, (p, g) in enumerate(zip(preds, gts)):
        pa, ga = _as_array(p, f"preds[{i}]"), _as_array(g, f"gts[{i}]")
        _check_gt(ga, f"gts[{i}]")
        p_arrays.append(pa)
        g_arrays.append(ga)
        if len(ga) == 0:
            continue  # not applicable: stays NaN
        if len(pa) == 0:
            out[i] = 0.0  # ground truth exists, model cited nothing
            continue
        buckets[(len(pa), len(ga))].append(i)
    for (n, m), idx in buckets.items():
        p = np.stack([p_arrays[i] for i in idx])  # [K, n, 4]
        g = np.stack([g_arrays[i] for i in idx])  # [K, m, 4]
        _, s = _scores(p, g)
        out[idx] = _best_matching_values(s) / max(n, m)
    return out


def spatial_grounding(pred: BoxesLike, gt: BoxesLike) -> float:
    """R_G in [0, 1] of one rollout, NaN when there is no ground-truth box."""
    return float(spatial_grounding_batch([pred], [gt])[0])
