"""The pipeline's stages as ``dvc.yaml`` declares them, and the content hashes both runners key on.

``dvc.yaml`` is the one list of each stage's code, params keys, inputs and outputs. The Prefect
tasks read it through this module, so a Prefect cache key and a DVC lock entry are made of the
same things:

    stage key = H(stage name,
                  values of the params keys the stage lists,          (DVC: params)
                  content of the code it lists,                        (DVC: deps without ${...})
                  content hashes of the upstream outputs it reads)     (DVC: deps with ${...})

The stages that resume (SFT, FGRPO rounds) keep their outputs between runs (``persist: true``),
so a run must not resume checkpoints that another configuration wrote: :func:`claim_outputs`
records the key in ``<out>/stage.json`` when a stage starts and moves outputs of another key
aside (to ``<out>.stale``) before it runs. Nothing here imports Prefect or DVC.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml
from pydantic import BaseModel

from fgrpo_core.config import Params, section_hash

DVC_YAML = "dvc.yaml"
STAGE_FILE = "stage.json"  # written into a persistent output when its stage starts
DVCIGNORE = ".dvcignore"  # patterns DVC skips inside tracked folders; content_hash skips them too
DEFAULT_IGNORE = ("__pycache__/", "*.pyc", "*.pyo")
_VAR = re.compile(r"\$\{\s*([A-Za-z0-9_.]+)\s*\}")


# --------------------------------------------------------------------------------------------
# dvc.yaml
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """One ``dvc.yaml`` stage, as far as cache keys need it."""

    name: str
    cmd: str
    code: tuple[str, ...]  # deps given as literal paths: the stage's source code
    inputs: tuple[str, ...]  # deps given through ${params}: upstream outputs (data, models)
    params: tuple[str, ...]  # dotted params keys the stage reads
    outs: tuple[str, ...]  # outputs (with ${params} unresolved)


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``dvc.yaml``: ``start`` or the first parent that has one."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / DVC_YAML).is_file():
            return d
    raise FileNotFoundError(f"no {DVC_YAML} in {here} or its parents (run from the project folder)")


def _out_paths(entries: Iterable[Any]) -> tuple[str, ...]:
    # An entry is "path" or {"path": {options}}.
    return tuple(e if isinstance(e, str) else next(iter(e)) for e in entries or ())


def load_stages(root: str | Path) -> dict[str, StageSpec]:
    """Every stage of ``<root>/dvc.yaml``."""
    path = Path(root) / DVC_YAML
    raw = yaml.safe_load(path.read_text()) or {}
    stages = {}
    for name, st in (raw.get("stages") or {}).items():
        deps = [str(d) for d in st.get("deps") or ()]
        keys: list[str] = []
        for entry in st.get("params") or ():
            if isinstance(entry, str):
                keys.append(entry)
            else:  # {file: [keys]}
                for file_keys in entry.values():
                    keys.extend(file_keys)
        outs = [*_out_paths(st.get("outs")), *_out_paths(st.get("metrics")), *_out_paths(st.get("plots"))]
        stages[name] = StageSpec(
            name=name,
            cmd=str(st["cmd"]),
            code=tuple(d for d in deps if "${" not in d),
            inputs=tuple(d for d in deps if "${" in d),
            params=tuple(keys),
            outs=tuple(outs),
        )
    return stages


def stage_spec(name: str, root: str | Path) -> StageSpec:
    stages = load_stages(root)
    if name not in stages:
        raise KeyError(f"{Path(root) / DVC_YAML} has no stage '{name}' (stages: {', '.join(stages)})")
    return stages[name]


# --------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------
def param_value(params: Params, dotted: str) -> Any:
    """The value at a dotted key (``model.min_pixels``); a section stays a pydantic model."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise KeyError(f"params key '{dotted}' does not exist (at '{part}')")
        node = getattr(node, part)
    return node


def resolve(template: str, params: Params) -> str:
    """``${data.out_dir}/sft`` -> ``data/staged/sft`` (DVC's interpolation, for our keys)."""
    return _VAR.sub(lambda m: str(param_value(params, m.group(1))), template)


def params_hash(params: Params, keys: Iterable[str]) -> str:
    """Hash of the values a stage reads: a section by ``section_hash``, a leaf by its JSON."""
    parts = {}
    for k in sorted(set(keys)):
        v = param_value(params, k)
        parts[k] = section_hash(v) if isinstance(v, BaseModel) else json.dumps(v, sort_keys=True, default=str)
    return _sha(json.dumps(parts, sort_keys=True))


# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ignore_patterns(root: str | Path) -> tuple[str, ...]:
    """The ``.dvcignore`` patterns of the project (name patterns; ``dir/`` matches folders)."""
    f = Path(root) / DVCIGNORE
    if not f.is_file():
        return DEFAULT_IGNORE
    lines = (ln.strip() for ln in f.read_text().splitlines())
    return tuple(ln for ln in lines if ln and not ln.startswith("#"))


def _ignored(rel: Path, patterns: Sequence[str]) -> bool:
    """Is a file (path relative to the hashed folder) skipped? Folder patterns match any parent."""
    for pat in patterns:
        if pat.endswith("/"):
            if any(fnmatch.fnmatchcase(part, pat[:-1]) for part in rel.parts[:-1]):
                return True
        elif fnmatch.fnmatchcase(rel.name, pat):
            return True
    return False


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hash(paths: Iterable[str | Path], root: str | Path = ".") -> str:
    """Hash of the bytes and relative names of every file under ``paths`` (folders walked),
    skipping what ``.dvcignore`` skips, so it changes exactly when DVC sees a change.

    A path that does not exist is an error: a missing input must not hash like an empty one.
    """
    root = Path(root)
    patterns = ignore_patterns(root)
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        full = root / p
        if not full.exists():
            raise FileNotFoundError(f"cannot hash {full}: it does not exist")
        files = [full] if full.is_file() else sorted(f for f in full.rglob("*") if f.is_file())
        for f in files:
            rel = f.relative_to(root) if f.is_relative_to(root) else f
            if _ignored(f.relative_to(full) if f != full else Path(f.name), patterns):
                continue
            h.update(f"{rel.as_posix()}\0{_file_sha(f)}\n".encode())
    return h.hexdigest()[:16]


def code_hash(spec: StageSpec, root: str | Path) -> str:
    """Content of the stage's code deps."""
    return content_hash(spec.code, root)


def stage_key(stage: str, params_digest: str, code_digest: str, inputs: Mapping[str, str]) -> str:
    """The one key of a stage run (Prefect's cache key; the identity a resumed run must match)."""
    blob = {"stage": stage, "params": params_digest, "code": code_digest, "inputs": dict(sorted(inputs.items()))}
    return _sha(json.dumps(blob, sort_keys=True))


@dataclass(frozen=True)
class StageIdentity:
    """Everything that decides a stage's result, hashed.

    ``key`` is what DVC sees (params keys, code deps, input deps): persistent outputs record it.
    ``cache_key`` adds ``runner``, the hash of what only the Prefect task adds (its own code,
    extra params it reads), so that editing the Prefect wrapper also invalidates Prefect's cache.
    """

    stage: str
    params_hash: str
    code_hash: str
    inputs: dict[str, str]  # resolved input path -> content hash
    runner: str = ""

    @property
    def key(self) -> str:
        return stage_key(self.stage, self.params_hash, self.code_hash, self.inputs)

    @property
    def cache_key(self) -> str:
        return _sha(f"{self.key}:{self.runner}") if self.runner else self.key


def _params_replacements(stage: str, params: Params) -> dict[str, str]:
    """Inputs the params redirect: rounds started from ``fgrpo.init_from`` instead of the SFT model."""
    if stage == "train" and params.fgrpo.init_from:
        return {"${sft.out_dir}/model": params.fgrpo.init_from}
    return {}


def identity_from_disk(stage: str, params: Params, root: str | Path | None = None, *,
                       runner_code: Iterable[str] = (), runner_params: Iterable[str] = (),
                       replace_inputs: Mapping[str, str] | None = None) -> StageIdentity:
    """The identity of ``stage`` for these params, hashing its inputs as they are on disk now.

    ``replace_inputs`` maps a dvc.yaml input (e.g. ``${fgrpo.out_dir}``) to the path actually
    read instead (the nightly evaluation of a fetched checkpoint).
    """
    root = project_root(root)
    spec = stage_spec(stage, root)
    replace = {**_params_replacements(stage, params), **(replace_inputs or {})}
    inputs = {}
    for templ in spec.inputs:
        path = replace.get(templ) or resolve(templ, params)
        inputs[path] = content_hash([path], root)
    runner_code, runner_params = list(runner_code), list(runner_params)
    runner = ""
    if runner_code or runner_params:
        runner = _sha(content_hash(runner_code, root) + ":" + params_hash(params, runner_params))
    return StageIdentity(stage, params_hash(params, spec.params), code_hash(spec, root), inputs, runner)


# --------------------------------------------------------------------------------------------
# Persistent outputs
# --------------------------------------------------------------------------------------------
def claim_outputs(identity: StageIdentity, outs: Iterable[str | Path], log=None) -> bool:
    """Make ``outs`` safe to resume into for this identity; returns True when they are resumable.

    The first output folder holds ``stage.json`` with the key it was started for. Outputs with
    another key (or none) are moved aside to ``<out>.stale`` (one slot, the previous stale copy
    is deleted), so a changed config, code or input never resumes old checkpoints.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    outs = [Path(o) for o in outs]
    marker = outs[0] / STAGE_FILE
    existing = [o for o in outs if o.exists()]
    recorded = json.loads(marker.read_text()).get("key") if marker.is_file() else None
    resumable = recorded == identity.key
    if existing and not resumable:
        why = "was started for another stage key" if recorded else "has no stage.json"
        for o in existing:
            stale = o.with_name(o.name + ".stale")
            if stale.exists():
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            o.rename(stale)
        log(f"{identity.stage}: {outs[0]} {why}; moved {', '.join(map(str, existing))} aside (*.stale), "
            "starting fresh")
    outs[0].mkdir(parents=True, exist_ok=True)
    record = {"stage": identity.stage, "key": identity.key, "params_hash": identity.params_hash,
              "code_hash": identity.code_hash, "inputs": identity.inputs}
    marker.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return resumable


def guard_outputs(stage: str, params: Params, outs: Iterable[str | Path]) -> bool:
    """For a stage command (``fgrpo sft``/``fgrpo train``): claim its persistent outputs for the
    stage key computed from disk. Returns True when they may be resumed. Outside a project with
    ``dvc.yaml``, or with an input missing (the stage then fails on its own), nothing is done."""
    try:
        identity = identity_from_disk(stage, params)
    except FileNotFoundError:
        return False
    return claim_outputs(identity, outs)
