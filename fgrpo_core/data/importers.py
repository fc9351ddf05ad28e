"""Importers for the paper's evaluation benchmarks, laid out as users download them.

Every benchmark's mapping to our schema is written once, in :data:`FIELD_MAPPING` below (the
docs table in ``docs/data.md`` is generated from it). Each importer reads one of the layouts
listed there, maps each row, moves the image and its boxes into the model frame
(``schema.to_model_frame``) and validates the sample; a bad row raises ``SchemaError`` naming the
file, the 0-based data row and the source field.

Layouts read:
- a Hugging Face dataset saved with ``save_to_disk`` (``load_from_disk``; a ``DatasetDict``
  gives its ``test`` split, its only split, or ``BenchmarkImport.split``);
- parquet (one file, or a folder of them, e.g. the hub's ``data/test-*.parquet``);
- JSON/JSONL or CSV annotations with an image folder (paths relative to ``image_root``, default
  beside the annotation file);
- a download folder: the benchmark's evaluation file is taken by its known name
  (``IMPORTERS[name][1]``, tried in order; MindCube: ``MindCube_tinybench.jsonl``, the split the
  paper evaluates). A pattern that matches several files is an error listing them (they may be
  different splits, which are never mixed), unless they are the shards of one split
  (``test-00000-of-00002.parquet`` ...). A folder without any of them but with one ``.zip`` reads
  that archive;
- a zip archive as downloaded (MindCube's ``data.zip``, OmniSpatial's ``OmniSpatial-test.zip``),
  read in place with ``zipfile``: the same file names are looked for at the archive's root and
  inside each of its top-level folders, and images are read from the archive. Other archives
  (tar, 7z...) are an error saying what to extract where.
Ids are unique within a benchmark: a second row with an id already seen is an error naming both rows.
Benchmarks with several images per question (MindCube views, SAT frames) are tiled left to right
into one image (each resized to the first image's height) **[ours: our schema holds one image]**.
Option order is kept as staged by the benchmark; circular evaluation (SAT) rotates options at
evaluation time (``fgrpo_core.eval.circular``).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from fgrpo_core.config import BenchmarkImport
from fgrpo_core.data.schema import Box, Sample, SchemaError, to_model_frame, validate_sample
from fgrpo_core.prompts import LETTERS


@dataclass(frozen=True)
class FieldMap:
    """Where each of our fields comes from, for one benchmark (documentation and dispatch)."""

    hub: str  # where users download it
    layouts: str  # what this importer reads
    id: str
    task: str
    question: str
    choices: str
    answer: str
    image: str
    boxes: str


FIELD_MAPPING: dict[str, FieldMap] = {
    "cvbench_2d": FieldMap(
        hub="nyu-visionx/CV-Bench (rows with type == '2D')",
        layouts="saved HF dataset; test_2d.parquet / test.parquet; test_2d.jsonl + img/",
        id="'cvbench_2d-' + idx", task="task, lower-cased (count, relation)", question="question",
        choices="choices (list)", answer="answer '(B)' -> 'B'",
        image="image (parquet {bytes, path} / decoded), else img dir + filename", boxes="bbox when present",
    ),
    "cvbench_3d": FieldMap(
        hub="nyu-visionx/CV-Bench (rows with type == '3D')",
        layouts="saved HF dataset; test_3d.parquet / test.parquet; test_3d.jsonl + img/",
        id="'cvbench_3d-' + idx", task="task, lower-cased (depth, distance)", question="question",
        choices="choices (list)", answer="answer '(A)' -> 'A'",
        image="image, else img dir + filename",
        boxes="bbox (Omni3D rows): [x1,y1,x2,y2] or a list of them, original pixels, label 'object'",
    ),
    "mindcube": FieldMap(
        hub="MLL-Lab/MindCube (data.zip: data/raw/MindCube_tinybench.jsonl + image folders)",
        layouts="MindCube_tinybench.jsonl + images (folder or data.zip); saved HF dataset",
        id="'mindcube-' + id", task="type, else the setting in id (around/rotation/among/...)",
        question="question up to the first option marker", choices="'A. ... B. ...' parsed from question",
        answer="gt_answer letter", image="images (list of paths): views tiled left to right", boxes="none",
    ),
    "mmvp": FieldMap(
        hub="MMVP/MMVP (Questions.csv + 'MMVP Images/')",
        layouts="Questions.csv + 'MMVP Images/<Index>.jpg'; parquet / saved HF dataset with an image column",
        id="'mmvp-' + Index (header 'Index' or the hub's 'lndex')", task="'mmvp'", question="Question",
        choices="Options '(a) x (b) y' -> [x, y]", answer="Correct Answer '(a)' -> 'A'",
        image="'MMVP Images/<Index>.jpg', or image column", boxes="none",
    ),
    "omnispatial": FieldMap(
        hub="qizekun/OmniSpatial (OmniSpatial-test.zip: data.json + <task_type>/<n>.png)",
        layouts="data.json (list) or JSONL + image folders (folder or OmniSpatial-test.zip); saved HF dataset",
        id="'omnispatial-' + id", task="task_type + '/' + sub_task_type", question="question",
        choices="options (list)", answer="answer (0-based index) -> letter",
        image="image_path, else <task_type>/<id before '_'>.png, or image column", boxes="none",
    ),
    "realworldqa": FieldMap(
        hub="xai-org/RealworldQA (data/test-*.parquet)",
        layouts="parquet file or folder; saved HF dataset",
        id="'realworldqa-' + row number (over the shards, in name order)", task="'realworldqa'",
        question="question without options and the 'Please answer ...' instruction",
        choices="'A. ...' lines parsed from question; none for free-form rows",
        answer="answer letter; free-form rows keep the answer text", image="image", boxes="none",
    ),
    "sat": FieldMap(
        hub="array/SAT (split 'test' = SAT-Real)",
        layouts="saved HF dataset; parquet",
        id="'sat-' + row number (over the shards, in name order)", task="question_type", question="question", choices="answers (list)",
        answer="correct_answer (an option's text) -> its letter",
        image="image_bytes (list): frames tiled left to right", boxes="none",
    ),
}


def mapping_table_markdown() -> str:
    """The field mapping as a markdown table (pasted into docs/data.md; a test keeps them equal)."""
    cols = ["hub", "layouts", "id", "task", "question", "choices", "answer", "image", "boxes"]
    lines = ["| benchmark | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, fm in FIELD_MAPPING.items():
        lines.append(f"| {name} | " + " | ".join(getattr(fm, c).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------
@dataclass
class RowSource:
    """Rows of one annotation file (or saved dataset) and where relative image paths start."""

    file: str
    rows: Iterator[dict[str, Any]]
    base: Path


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                               "state.json"))


def _load_saved(path: Path, split: str | None) -> Iterator[dict[str, Any]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or ("test" if "test" in names else names[0] if len(names) == 1 else None)
        if pick not in names:
            raise SchemaError(str(path), "-", "split", split, f"choose one of the splits {names} "
                              "(BenchmarkImport.split)")
        ds = ds[pick]
    return iter(ds)


# A file on disk (pathlib.Path) or inside a zip archive (zipfile.Path): both give suffix, name,
# parent, is_file(), open() and read_text(), which is all the readers below use.
Entry = Any


def _read_file(path: Entry) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        with path.open("rb") as fh:
            table = pq.read_table(fh)
        return iter(table.to_pylist())
    if suffix == ".jsonl":
        def rows():
            with path.open("r", encoding="utf-8") as fh:
                for k, line in enumerate(fh):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as err:
                            raise SchemaError(str(path), k, "<line>", line[:80], f"not JSON: {err}") from None
        return rows()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SchemaError(str(path), "-", "<file>", path.name, f"not JSON: {err}") from None
        if isinstance(data, dict):  # {"id": row} or {"data": [...]}
            data = data.get("data") if isinstance(data.get("data"), list) else list(data.values())
        if not isinstance(data, list):
            raise SchemaError(str(path), "-", "<file>", type(data).__name__, "expected a list of rows")
        return iter(data)
    if suffix == ".csv":
        # utf-8-sig: a byte-order mark must not become part of the first header cell
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            return iter(list(csv.DictReader(fh)))
    raise SchemaError(str(path), "-", "<file>", path.name, "unsupported file type (parquet, jsonl, json, csv)")


_ANNOTATION_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_OTHER_ARCHIVES = (".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")
_SHARD = re.compile(r"^(.*)-\d+-of-(\d+)\.parquet$")
# Said in the error when a folder lacks the evaluation file (why that one and not another).
_EVAL_FILE_NOTE = {"mindcube": "the paper evaluates MindCube's tinybench (MindCube_tinybench.jsonl)"}


def _glob(root: Entry, pattern: str) -> list[Entry]:
    """Files under ``root`` (a folder or a folder inside a zip) whose relative path matches ``pattern``
    (``*`` never crosses a ``/``)."""
    if isinstance(root, Path):
        return sorted(f for f in root.glob(pattern) if f.is_file())
    at = root.at
    names = [n for n in root.root.namelist() if n.startswith(at) and not n.endswith("/")]
    rel = [(n, n[len(at):]) for n in names]
    return [zipfile.Path(root.root, n) for n, r in sorted(rel)
            if r.count("/") == pattern.count("/") and fnmatch.fnmatchcase(r, pattern)]


def _one_split_in_shards(found: list[Entry]) -> bool:
    """``test-00000-of-00002.parquet``, ``test-00001-of-00002.parquet``: one split, several files."""
    keys = {(str(f.parent), m.group(1), m.group(2)) if (m := _SHARD.match(f.name)) else None for f in found}
    return None not in keys and len(keys) == 1


def _annotation_files(name: str, where: str, roots: list[Entry], candidates: tuple[str, ...]) -> list[Entry]:
    """The evaluation file(s) of ``name`` under the first root that has one: the first candidate
    pattern that matches; several matches are an error (different splits are never mixed) unless
    they are the shards of one split."""
    for root in roots:
        for pattern in candidates:
            found = _glob(root, pattern)
            if len(found) == 1 or (found and _one_split_in_shards(found)):
                return found
            if found:
                raise SchemaError(where, "-", "path", [str(f) for f in found][:12],
                                  f"{name}: {len(found)} annotation files match '{pattern}'; they may be "
                                  "different splits, which are never mixed: point data.benchmarks[].path at "
                                  "the file to evaluate")
    return []


def _annotation_like(roots: list[Entry]) -> list[str]:
    """Files that look like annotations (listed in the error when the known names are absent)."""
    out: list[str] = []
    for root in roots:
        for depth in ("*", "*/*", "*/*/*"):
            out += [str(f) for suffix in _ANNOTATION_SUFFIXES for f in _glob(root, depth + suffix)]
    return sorted(set(out))[:20]


def _not_found(name: str, where: str, candidates: tuple[str, ...], roots: list[Entry]) -> SchemaError:
    note = f" ({_EVAL_FILE_NOTE[name]})" if name in _EVAL_FILE_NOTE else ""
    others = _annotation_like(roots)
    seen = (f"; found {others}: point data.benchmarks[].path at the one to evaluate" if others
            else "; found no annotation file")
    return SchemaError(where, "-", "path", where, f"{name}: no evaluation file here{note}; looked for "
                       f"{list(candidates)}{seen}")


def _open_zip(spec: BenchmarkImport, path: Path, candidates: tuple[str, ...]) -> list[RowSource]:
    """Read a zip archive in place: the evaluation file at its root or inside a top-level folder."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise SchemaError(str(path), "-", "path", spec.path, f"{spec.name}: not a readable zip archive ({err}); "
                          f"download it again, or extract it (unzip {path} -d {path.parent}) and point "
                          "data.benchmarks[].path at the extracted folder") from None
    tops = sorted({n.split("/", 1)[0] for n in zf.namelist() if "/" in n})
    roots = [zipfile.Path(zf)] + [zipfile.Path(zf, t + "/") for t in tops]
    found = _annotation_files(spec.name, str(path), roots, candidates)
    if not found:
        raise _not_found(spec.name, str(path), candidates, roots)
    return [RowSource(str(f), _read_file(f), Path(spec.image_root) if spec.image_root else f.parent) for f in found]


def open_rows(spec: BenchmarkImport, candidates: tuple[str, ...]) -> list[RowSource]:
    """Row sources for ``spec.path``: a saved dataset, one file, a zip archive, or a download folder
    (its evaluation file by name, see the module docstring)."""
    path = Path(spec.path)
    if not path.exists():
        raise SchemaError(str(path), "-", "path", spec.path, f"{spec.name}: download not found")
    base = Path(spec.image_root) if spec.image_root else (path if path.is_dir() else path.parent)
    if _is_saved_dataset(path):
        return [RowSource(str(path), _load_saved(path, spec.split), base)]
    if path.is_file() and path.suffix.lower() == ".zip":
        return _open_zip(spec, path, candidates)
    if path.is_file() and (path.suffix.lower() in _OTHER_ARCHIVES or path.name.lower().endswith(".tar.gz")):
        raise SchemaError(str(path), "-", "path", spec.path, f"{spec.name}: an archive this importer does not read "
                          f"in place (zip only); extract it (e.g. tar -xf {path} -C {path.parent}) and point "
                          "data.benchmarks[].path at the extracted folder")
    if path.is_file():
        return [RowSource(str(path), _read_file(path), base)]
    found = _annotation_files(spec.name, str(path), [path], candidates)
    if found:
        return [RowSource(str(f), _read_file(f), Path(spec.image_root) if spec.image_root else f.parent)
                for f in found]
    zips = sorted(path.glob("*.zip"))
    if len(zips) == 1:  # the download as the hub ships it (MindCube's data.zip, OmniSpatial-test.zip)
        return _open_zip(spec, zips[0], candidates)
    if len(zips) > 1:
        raise SchemaError(str(path), "-", "path", [z.name for z in zips], f"{spec.name}: no evaluation file here "
                          f"(looked for {list(candidates)}) and several archives: point data.benchmarks[].path "
                          "at the one to read")
    raise _not_found(spec.name, str(path), candidates, [path])


# --------------------------------------------------------------------------------------------
# Field helpers (each raises SchemaError naming file/row/field)
# --------------------------------------------------------------------------------------------
class RowCtx:
    """The row being mapped, for error messages."""

    def __init__(self, src: RowSource, row_no: int, row: dict[str, Any], index: int | None = None):
        self.src, self.row_no, self.row = src, row_no, row
        # the row's number over all files of the benchmark (shards in name order): ids built from a
        # row number use it, so that two shards never give the same id
        self.index = row_no if index is None else index

    def error(self, field: str, value: Any, problem: str) -> SchemaError:
        return SchemaError(self.src.file, self.row_no, field, value, problem)

    def get(self, field: str, required: bool = True) -> Any:
        if field not in self.row or (required and self.row[field] is None):
            if required:
                raise self.error(field, None, f"missing (columns: {sorted(self.row)})")
            return None
        return self.row[field]

    def text(self, field: str) -> str:
        v = self.get(field)
        if not isinstance(v, (str, int)) or not str(v).strip():
            raise self.error(field, v, "must be non-empty text")
        return str(v).strip()

    def image(self, field: str, value: Any = None) -> Image.Image:
        value = self.get(field) if value is None else value
        if isinstance(value, (list, tuple)):
            if not value:
                raise self.error(field, value, "empty image list")
            return tile([self.image(field, v) for v in value])
        try:
            if isinstance(value, Image.Image):
                return value.convert("RGB")
            if isinstance(value, dict):
                if value.get("bytes"):
                    return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
                value = value.get("path")
            if isinstance(value, (bytes, bytearray)):
                return Image.open(io.BytesIO(value)).convert("RGB")
            if isinstance(value, str) and value:
                p = Path(value)
                # relative paths: from the image root, else up to two folders above it (MindCube's
                # annotations sit in data/raw/ while their image paths start at data/); the root may
                # be a folder inside a zip archive (zipfile.Path)
                base = self.src.base
                ups = [base, base.parent, base.parent.parent]
                tries = [p] if p.is_absolute() else [d / p.as_posix() for d in ups]
                found = next((t for t in tries if t.is_file()), None)
                if found is None:
                    raise self.error(field, value, f"image file not found at {tries[0]}")
                with found.open("rb") as fh, Image.open(fh) as im:
                    return im.convert("RGB")
        except SchemaError:
            raise
        except Exception as err:  # PIL.UnidentifiedImageError, OSError: a corrupt image
            raise self.error(field, str(value)[:80], f"unreadable image: {err}") from None
        raise self.error(field, value, "no image (expected PIL image, {bytes, path}, bytes or a path)")


def tile(images: list[Image.Image]) -> Image.Image:
    """Several views side by side, each resized to the first one's height."""
    if len(images) == 1:
        return images[0]
    h = images[0].height
    scaled = [im if im.height == h else im.resize((max(1, round(im.width * h / im.height)), h)) for im in images]
    out = Image.new("RGB", (sum(im.width for im in scaled), h))
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width
    return out


_MARKER = re.compile(r"(?:(?<=\s)|^)\(?([A-J])(?:\)|\.|:)\s*")


def split_lettered_options(text: str) -> tuple[str, list[str]] | None:
    """"Q? A. x B. y" / "Q?\\nA. x\\nB. y" / "(A) x (B) y" -> ("Q?", ["x", "y"]); None if no options."""
    markers = list(_MARKER.finditer(text))
    for start in reversed([k for k, m in enumerate(markers) if m.group(1) == "A"]):
        chain, want = [markers[start]], "B"
        for m in markers[start + 1 :]:
            if m.group(1) == want:
                chain.append(m)
                want = LETTERS[LETTERS.index(want) + 1]
        if len(chain) >= 2:
            stem = text[: chain[0].start()].strip()
            opts = [text[m.end() : (chain[i + 1].start() if i + 1 < len(chain) else len(text))].strip()
                    for i, m in enumerate(chain)]
            opts = [o.rstrip(" ,;\n") for o in opts]
            if stem and all(opts):
                return stem, opts
    return None


def option_texts(ctx: RowCtx, field: str, values: Any) -> list[str]:
    """At least two options, each a non-empty text (numbers allowed); a null option is an error,
    never the text 'None'."""
    if not isinstance(values, (list, tuple)) or len(values) < 2:
        raise ctx.error(field, values, "must be a list of at least two option texts")
    if any(v is None or isinstance(v, (dict, list, tuple)) or not str(v).strip() for v in values):
        raise ctx.error(field, values, "every option must be a non-empty text")
    return [str(v).strip() for v in values]


def letter_answer(ctx: RowCtx, field: str, n_choices: int) -> str:
    """'B', '(B)', 'B.', '(b)' -> 'B', checked against the number of options."""
    raw = ctx.text(field)
    m = re.fullmatch(r"\(?([A-Ja-j])\)?[.:]?(?:\s.*)?", raw, re.S)
    if not m or m.group(1).upper() not in LETTERS[:n_choices]:
        raise ctx.error(field, raw, f"not an option letter of {LETTERS[:n_choices]}")
    return m.group(1).upper()


def parse_boxes(ctx: RowCtx, field: str, label: str) -> list[Box]:
    """None/[] -> []; [x1,y1,x2,y2] or a list of them -> boxes in the source image's pixels."""
    v = ctx.get(field, required=False)
    if v is None or (hasattr(v, "__len__") and len(v) == 0):
        return []
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as err:
            raise ctx.error(field, v, f"not a JSON box list: {err}") from None
    if not isinstance(v, (list, tuple)):
        raise ctx.error(field, v, "expected [x1, y1, x2, y2] or a list of them")
    items = [v] if v and isinstance(v[0], (int, float)) else v
    boxes = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 4 and all(isinstance(c, (int, float)) for c in item)):
            raise ctx.error(field, v, "expected [x1, y1, x2, y2] or a list of them")
        boxes.append(Box(label, *map(float, item)))
    return boxes


# --------------------------------------------------------------------------------------------
# One mapper per benchmark: row -> Sample in the source frame (None: row not in this benchmark)
# --------------------------------------------------------------------------------------------
def _cvbench(kind: str) -> Callable[[RowCtx], Sample | None]:
    def map_row(ctx: RowCtx) -> Sample | None:
        if "type" in ctx.row and str(ctx.row["type"]).upper() != kind:
            return None
        choices = ctx.get("choices")
        if not isinstance(choices, (list, tuple)) or any(c is None for c in choices):
            raise ctx.error("choices", choices, "must be a list of option texts")
        choices = [str(c) for c in choices]
        image = ctx.row.get("image")
        if image is None:
            image = str(Path("img") / ctx.text("filename")) if not str(ctx.get("filename")).startswith("img") \
                else ctx.text("filename")
        return Sample(
            id=f"cvbench_{kind.lower()}-{ctx.text('idx')}", source=f"cvbench_{kind.lower()}",
            task=ctx.text("task").lower(), image=ctx.image("image" if "image" in ctx.row else "filename", image),
            question=ctx.text("question"), choices=choices, answer=letter_answer(ctx, "answer", len(choices)),
            boxes=parse_boxes(ctx, "bbox", "object"),
        )
    return map_row


def _mindcube(ctx: RowCtx) -> Sample:
    parsed = split_lettered_options(ctx.text("question"))
    if parsed is None:
        raise ctx.error("question", ctx.row["question"], "no lettered options ('A. ... B. ...') found")
    stem, choices = parsed
    rid = ctx.text("id")
    setting = next((s for s in ("around", "rotation", "translation", "among") if s in rid.lower()), "other")
    task = str(ctx.row.get("type") or setting)
    images = ctx.get("images") if "images" in ctx.row else ctx.get("image")
    return Sample(id=f"mindcube-{rid}", source="mindcube", task=task,
                  image=ctx.image("images" if "images" in ctx.row else "image", images), question=stem,
                  choices=choices, answer=letter_answer(ctx, "gt_answer", len(choices)))


_MMVP_OPTION = re.compile(r"\(([a-j])\)\s*")


def _mmvp(ctx: RowCtx) -> Sample:
    # The hub's Questions.csv spells its first header cell 'lndex' (lower-case L); read both.
    index = ctx.text("lndex" if "Index" not in ctx.row and "lndex" in ctx.row else "Index")
    raw = ctx.get("Options")
    if isinstance(raw, (list, tuple)):
        choices = [str(c).strip() for c in raw]
    else:
        parts = _MMVP_OPTION.split(str(raw))  # ["", "a", "Open ", "b", "Closed"]
        letters, texts = parts[1::2], [p.strip() for p in parts[2::2]]
        if len(texts) < 2 or letters != list("abcdefghij"[: len(letters)]) or not all(texts):
            raise ctx.error("Options", raw, "expected '(a) option (b) option'")
        choices = texts
    if "image" in ctx.row and ctx.row["image"] is not None:
        image = ctx.image("image")
    else:
        image = ctx.image("Index", str(Path("MMVP Images") / f"{index}.jpg"))
    return Sample(id=f"mmvp-{index}", source="mmvp", task="mmvp", image=image, question=ctx.text("Question"),
                  choices=choices, answer=letter_answer(ctx, "Correct Answer", len(choices)))


def _omnispatial(ctx: RowCtx) -> Sample:
    rid, task_type = ctx.text("id"), ctx.text("task_type")
    choices = option_texts(ctx, "options", ctx.get("options"))
    ans = ctx.get("answer")
    if isinstance(ans, int) or (isinstance(ans, str) and ans.strip().isdigit()):
        idx = int(ans)
        if not 0 <= idx < len(choices):
            raise ctx.error("answer", ans, f"option index out of range 0..{len(choices) - 1}")
        answer = LETTERS[idx]
    else:
        answer = letter_answer(ctx, "answer", len(choices))
    if ctx.row.get("image") is not None:
        image = ctx.image("image")
    elif ctx.row.get("image_path"):
        image = ctx.image("image_path")
    else:
        image = ctx.image("id", str(Path(task_type) / f"{rid.split('_')[0]}.png"))
    sub = ctx.row.get("sub_task_type")
    return Sample(id=f"omnispatial-{rid}", source="omnispatial", task=f"{task_type}/{sub}" if sub else task_type,
                  image=image, question=ctx.text("question"), choices=choices, answer=answer)


_RWQA_INSTRUCTION = re.compile(r"\s*Please answer directly[^\n]*", re.I)


def _realworldqa(ctx: RowCtx) -> Sample:
    text = _RWQA_INSTRUCTION.sub("", ctx.text("question")).strip()
    parsed = split_lettered_options(text)
    if parsed is None:  # free-form row: keep the reference answer text
        question, choices, answer = text, [], ctx.text("answer")
    else:
        question, choices = parsed
        answer = letter_answer(ctx, "answer", len(choices))
    return Sample(id=f"realworldqa-{ctx.index}", source="realworldqa", task="realworldqa",
                  image=ctx.image("image"), question=question, choices=choices, answer=answer)


def _sat(ctx: RowCtx) -> Sample:
    choices = option_texts(ctx, "answers", ctx.get("answers"))
    correct = ctx.text("correct_answer")
    if correct not in choices:
        raise ctx.error("correct_answer", correct, f"is not one of the answers {choices}")
    return Sample(id=f"sat-{ctx.index}", source="sat", task=str(ctx.row.get("question_type") or "sat"),
                  image=ctx.image("image_bytes"), question=ctx.text("question"), choices=choices,
                  answer=LETTERS[choices.index(correct)])


IMPORTERS: dict[str, tuple[Callable[[RowCtx], Sample | None], tuple[str, ...]]] = {
    # name: (row mapper, annotation files looked for inside a download folder, in order)
    "cvbench_2d": (_cvbench("2D"), ("test_2d.parquet", "test_2d.jsonl", "test.parquet", "test.jsonl", "*.parquet")),
    "cvbench_3d": (_cvbench("3D"), ("test_3d.parquet", "test_3d.jsonl", "test.parquet", "test.jsonl", "*.parquet")),
    # MindCube: the evaluation file by name only; its folder also holds MindCube.jsonl and
    # MindCube_train.jsonl, other splits that must never be read as the test split.
    "mindcube": (_mindcube, ("MindCube_tinybench.jsonl", "raw/MindCube_tinybench.jsonl",
                             "data/raw/MindCube_tinybench.jsonl")),
    "mmvp": (_mmvp, ("Questions.csv", "*.csv", "*.parquet")),
    "omnispatial": (_omnispatial, ("data.json", "*.jsonl", "*.json")),
    "realworldqa": (_realworldqa, ("test-*.parquet", "data/test-*.parquet", "*.parquet", "data/*.parquet")),
    "sat": (_sat, ("test-*.parquet", "data/test-*.parquet", "*.parquet", "data/*.parquet")),
}
assert set(IMPORTERS) == set(FIELD_MAPPING)


def folder_files_markdown() -> str:
    """Which file each importer takes from a download folder (pasted into docs/data.md; a test keeps
    them equal)."""
    lines = ["| benchmark | evaluation file looked for in a folder or zip, first match wins |", "|---|---|"]
    for name, (_, candidates) in IMPORTERS.items():
        lines.append(f"| {name} | " + ", ".join(f"`{c}`" for c in candidates) + " |")
    return "\n".join(lines)


def import_benchmark(spec: BenchmarkImport, min_pixels: int, max_pixels: int) -> Iterator[Sample]:
    """Samples of one benchmark download, in the model frame and validated (lazily, row by row)."""
    if spec.name not in IMPORTERS:
        raise SchemaError("<params>", "-", "data.benchmarks.name", spec.name, f"unknown benchmark; known: "
                          f"{sorted(IMPORTERS)}")
    mapper, candidates = IMPORTERS[spec.name]
    emitted = 0
    seen: dict[str, tuple[str, int]] = {}  # id -> (file, row) where it was first read
    index = 0
    for src in open_rows(spec, candidates):
        for row_no, row in enumerate(src.rows):
            if spec.limit is not None and emitted >= spec.limit:
                return
            ctx = RowCtx(src, row_no, dict(row), index)
            index += 1
            sample = mapper(ctx)
            if sample is None:
                continue
            if sample.id in seen:
                first_file, first_row = seen[sample.id]
                raise SchemaError(src.file, row_no, "id", sample.id, f"duplicate id: row {first_row} of "
                                  f"{first_file} has it too (a split never holds two samples with one id)")
            seen[sample.id] = (src.file, row_no)
            validate_sample(sample, src.file, row_no)  # in the source frame: boxes vs the source image
            sample.image, sample.boxes, _ = to_model_frame(sample.image, sample.boxes, min_pixels, max_pixels)
            emitted += 1
            yield sample
