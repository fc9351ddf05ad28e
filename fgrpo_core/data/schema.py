"""One sample schema for every source (synthetic scenes and imported benchmarks).

A staged sample is a :class:`Sample`; on disk it is one row of a ``datasets`` dataset with
:data:`FEATURES`. Field by field:

- ``id``: unique within its split, e.g. ``"synthetic-sft-000042"`` or ``"mmvp-17"``.
- ``source``: the benchmark name (``synthetic``, ``cvbench_2d``, ``mmvp``...).
- ``task``: the task family (``relation_2d``, ``depth_order``... or the benchmark's own task).
- ``image``: an RGB ``PIL.Image`` **already in the model frame** (see below).
- ``question``: the question text without the options.
- ``choices``: the option texts, in order; option ``i`` is shown as letter ``LETTERS[i]``.
  Empty only for free-form questions (a few RealWorldQA rows).
- ``answer``: the correct option **letter** (``"B"`` means ``choices[1]``). For a free-form
  question (``choices == []``) it is the short reference answer instead.
- ``boxes``: labelled boxes ``(label, x1, y1, x2, y2)`` in absolute pixels of the staged image,
  top-left origin, ``x2``/``y2`` exclusive (a box ``[0, 0, 2, 2]`` covers 4 pixels). May be empty.
- ``scene``: the scene graph (JSON-able dict, see ``synthetic.py``) or ``None`` for real images.
- ``trace``: the SFT target ``<think>...</think><answer>X</answer>``; ``""`` outside the SFT split.
- ``trace_faults``: the faults injected in ``trace`` (subset of :data:`TRACE_FAULTS`).

Box frame (docs/method.md#box-coordinate-frame): Qwen2.5-VL sees an image after the processor's
``smart_resize`` (sides rounded to multiples of 28, pixel count clamped to
[min_pixels, max_pixels]) and writes boxes in pixels of *that* image. Staging therefore resizes
every image to exactly its ``smart_resize`` size (:func:`to_model_frame`) and scales its boxes by
the same factors, so the stored image **is** the model frame: the processor leaves it as is, and
ground-truth and predicted boxes share one frame.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from PIL import Image

import datasets

from fgrpo_core.prompts import LETTERS

TRACE_FAULTS: tuple[str, ...] = ("inconsistent", "hallucination", "bad_box")
PATCH_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches merged 2x2


class SchemaError(ValueError):
    """Bad input; the message names the file, the row, the field and the value."""

    def __init__(self, file: str, row: int | str, field: str, value: Any, problem: str):
        self.file, self.row, self.field, self.value, self.problem = file, row, field, value, problem
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{file}: row {row}: field '{field}': {problem} (got {shown})")


@dataclass(frozen=True)
class Box:
    """A labelled box in absolute pixels of the staged image (x2, y2 exclusive)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def scaled(self, sx: float, sy: float) -> "Box":
        return Box(self.label, self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)


@dataclass
class Sample:
    """One staged sample (see the module docstring for each field)."""

    id: str
    source: str
    task: str
    image: Image.Image
    question: str
    choices: list[str]
    answer: str
    boxes: list[Box] = field(default_factory=list)
    scene: dict[str, Any] | None = None
    trace: str = ""
    trace_faults: list[str] = field(default_factory=list)

    @property
    def answer_index(self) -> int | None:
        """Index of the correct choice, or None for a free-form question."""
        return LETTERS.index(self.answer) if self.choices else None

    def to_row(self) -> dict[str, Any]:
        """The ``datasets`` row (scene as JSON text, boxes as a list of dicts)."""
        return {
            "id": self.id,
            "source": self.source,
            "task": self.task,
            "image": self.image,
            "question": self.question,
            "choices": list(self.choices),
            "answer": self.answer,
            "boxes": [
                {"label": b.label, "x1": float(b.x1), "y1": float(b.y1), "x2": float(b.x2), "y2": float(b.y2)}
                for b in self.boxes
            ],
            "scene": None if self.scene is None else json.dumps(self.scene, sort_keys=True),
            "trace": self.trace,
            "trace_faults": list(self.trace_faults),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Sample":
        """Inverse of :meth:`to_row` (``datasets`` has already decoded the image)."""
        scene = row.get("scene")
        return cls(
            id=row["id"],
            source=row["source"],
            task=row["task"],
            image=row["image"],
            question=row["question"],
            choices=list(row["choices"]),
            answer=row["answer"],
            boxes=[Box(b["label"], b["x1"], b["y1"], b["x2"], b["y2"]) for b in row["boxes"]],
            scene=None if scene in (None, "") else json.loads(scene),
            trace=row.get("trace") or "",
            trace_faults=list(row.get("trace_faults") or []),
        )


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "task": datasets.Value("string"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")),
        "answer": datasets.Value("string"),
        "boxes": datasets.List(
            {
                "label": datasets.Value("string"),
                "x1": datasets.Value("float64"),
                "y1": datasets.Value("float64"),
                "x2": datasets.Value("float64"),
                "y2": datasets.Value("float64"),
            }
        ),
        "scene": datasets.Value("string"),  # JSON text, null for real images
        "trace": datasets.Value("string"),
        "trace_faults": datasets.List(datasets.Value("string")),
    }
)


def to_dataset(samples: list[Sample]) -> datasets.Dataset:
    """Samples -> a ``datasets.Dataset`` with :data:`FEATURES`."""
    if not samples:  # from_list([]) drops the features, and save_to_disk then fails ("Keys mismatch")
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    return datasets.Dataset.from_list([s.to_row() for s in samples], features=FEATURES)


def from_dataset(ds: datasets.Dataset) -> list[Sample]:
    """A staged dataset -> samples (checks the features first)."""
    if ds.features != FEATURES:
        missing = sorted(set(FEATURES) - set(ds.features))
        extra = sorted(set(ds.features) - set(FEATURES))
        raise ValueError(f"not a staged dataset: missing columns {missing}, unexpected {extra}")
    return [Sample.from_row(r) for r in ds]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def validate_sample(s: Sample, file: str = "<memory>", row: int | str = "?") -> None:
    """Raise :class:`SchemaError` naming file/row/field/value at the first problem."""

    def bad(field_name: str, value: Any, problem: str) -> SchemaError:
        return SchemaError(file, row, field_name, value, problem)

    for name in ("id", "source", "task", "question"):
        v = getattr(s, name)
        if not isinstance(v, str) or not v.strip():
            raise bad(name, v, "must be a non-empty string")
    if not isinstance(s.image, Image.Image):
        raise bad("image", type(s.image).__name__, "must be a PIL image")
    if s.image.mode != "RGB":
        raise bad("image", s.image.mode, "must be an RGB image")
    if not isinstance(s.choices, list) or not all(isinstance(c, str) and c.strip() for c in s.choices):
        raise bad("choices", s.choices, "must be a list of non-empty strings")
    if len(s.choices) == 1 or len(s.choices) > len(LETTERS):
        raise bad("choices", s.choices, f"must hold 2..{len(LETTERS)} options (or none: free-form)")
    if s.choices:
        if s.answer not in LETTERS[: len(s.choices)]:
            raise bad("answer", s.answer, f"must be one option letter of {LETTERS[: len(s.choices)]}")
    elif not isinstance(s.answer, str) or not s.answer.strip():
        raise bad("answer", s.answer, "a free-form question needs a non-empty answer")
    w, h = s.image.size
    for i, b in enumerate(s.boxes):
        coords = b.as_list()
        if not all(isinstance(c, (int, float)) and math.isfinite(c) for c in coords):
            raise bad(f"boxes[{i}]", coords, "coordinates must be finite numbers")
        if not (0 <= b.x1 < b.x2 <= w and 0 <= b.y1 < b.y2 <= h):
            raise bad(f"boxes[{i}]", coords, f"must satisfy 0<=x1<x2<={w}, 0<=y1<y2<={h}")
        if not isinstance(b.label, str):
            raise bad(f"boxes[{i}].label", b.label, "must be a string")
    if s.scene is not None:
        if not isinstance(s.scene, dict):
            raise bad("scene", s.scene, "must be a dict or None")
        try:
            json.dumps(s.scene)
        except (TypeError, ValueError) as err:
            raise bad("scene", str(err), "must be JSON-serialisable") from None
    if not isinstance(s.trace, str):
        raise bad("trace", s.trace, "must be a string")
    unknown = [f for f in s.trace_faults if f not in TRACE_FAULTS]
    if unknown:
        raise bad("trace_faults", s.trace_faults, f"unknown faults {unknown}; known: {TRACE_FAULTS}")
    if s.trace_faults and not s.trace:
        raise bad("trace_faults", s.trace_faults, "faults recorded without a trace")


# --------------------------------------------------------------------------------------------
# Model frame
# --------------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) as ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``.

    Restated here so that staging does not import torch/torchvision (tens of seconds); a test
    checks it equals the transformers function and the processor's ``image_grid_thw``.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def model_frame_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) the Qwen2.5-VL processor resizes an image to."""
    h, w = smart_resize(height, width, PATCH_FACTOR, min_pixels, max_pixels)
    return w, h


def to_model_frame(
    image: Image.Image, boxes: list[Box], min_pixels: int, max_pixels: int
) -> tuple[Image.Image, list[Box], tuple[float, float]]:
    """Resize to the model frame; scale boxes by the same factors. Returns (image, boxes, (sx, sy)).

    Bicubic, as the processor resizes. An image already in its frame is returned unchanged.
    """
    image = image.convert("RGB")
    w0, h0 = image.size
    w, h = model_frame_size(w0, h0, min_pixels, max_pixels)
    if (w, h) == (w0, h0):
        return image, list(boxes), (1.0, 1.0)
    sx, sy = w / w0, h / h0
    resized = image.resize((w, h), Image.Resampling.BICUBIC)
    scaled = [b.scaled(sx, sy) for b in boxes]
    # x2 = w0 scales to w up to float rounding (w0 * (w / w0) may exceed w by 1e-13): clamp
    scaled = [Box(b.label, max(0.0, b.x1), max(0.0, b.y1), min(float(w), b.x2), min(float(h), b.y2)) for b in scaled]
    return resized, scaled, (sx, sy)


# --------------------------------------------------------------------------------------------
# Content hash
# --------------------------------------------------------------------------------------------
def sample_hash(s: Sample) -> str:
    """sha256 of every field; the image enters as mode, size and raw pixels (not PNG bytes,
    whose compression may differ between zlib versions)."""
    h = hashlib.sha256()
    meta = s.to_row()
    meta.pop("image")
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(f"{s.image.mode}:{s.image.size}".encode())
    h.update(s.image.tobytes())
    return h.hexdigest()


def samples_hash(samples: list[Sample]) -> str:
    """Order-sensitive hash of a list of samples."""
    h = hashlib.sha256()
    for s in samples:
        h.update(sample_hash(s).encode())
    return h.hexdigest()


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Plain IoU of two ``[x1, y1, x2, y2]`` boxes (0 when the union is empty), one pair at a time:
    the synthetic generator and the exact verifier (rewards use CIoU, ``rewards/spatial.py``)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
