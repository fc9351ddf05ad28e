"""Params refuse nonsense at load, naming the key, the value and what is allowed.

Walks EVERY field of ``Params`` (recursively, through sections, optional sections, lists and
dicts): each numeric field must declare its range, and out-of-range values drawn by hypothesis
must be refused with the field's dotted key in the message; enumerated fields refuse values
outside their set. Cross-field rules, the CLI path (exit 2 before anything starts), every preset
loading, and the paper's values having one home (params defaults; core functions without defaults).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fgrpo_core.config import (
    FGRPOParams,
    Params,
    ParamsError,
    RolloutParams,
    SFTParams,
    load_params,
    params_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "params").glob("*.yaml")) + [ROOT / "params.yaml"]
PAPER_PRESETS = sorted((ROOT / "params").glob("qwen2.5-vl-*.yaml"))

# A valid params tree in which every optional section and list item exists, so every field has a
# place to put a bad value: the defaults, plus a model judge and one benchmark import.
BASE: dict[str, Any] = Params().model_dump(mode="json")
BASE["judges"]["model_judge"] = {"model": "judge", "base_url": "http://127.0.0.1:1/v1"}
BASE["data"]["benchmarks"] = [{"name": "mmvp", "path": "downloads/MMVP"}]
params_from_dict(BASE)  # the base itself is valid


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]  # keys into the raw tree ("0" = first list item)
    kind: str  # "int", "float", "enum"
    bounds: tuple[Any, ...]  # annotated_types constraints (Ge, Gt, Le, Lt, MultipleOf)
    allowed: tuple[Any, ...] = ()  # enum: the allowed values

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _strip_optional(tp):
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _walk(tp, path: tuple[str, ...], metadata: list) -> list[Leaf]:
    tp = _strip_optional(tp)
    if get_origin(tp) is typing.Annotated:
        inner, *extra = get_args(tp)
        meta = list(metadata)
        for e in extra:
            meta.extend(getattr(e, "metadata", [e]))
        return _walk(inner, path, meta)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        out = []
        for name, info in tp.model_fields.items():
            out += _walk(info.annotation, (*path, name), list(info.metadata))
        return out
    origin = get_origin(tp)
    if origin is list:
        return _walk(get_args(tp)[0], (*path, "0"), [])
    if origin is dict:
        node = BASE
        for p in path:
            node = node[p]
        return _walk(get_args(tp)[1], (*path, next(iter(node))), [])
    if origin is Literal:
        return [Leaf(path, "enum", (), get_args(tp))]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [Leaf(path, "enum", (), tuple(m.value for m in tp))]
    if tp is bool or tp is str:
        return []
    if tp in (int, float):
        bounds = tuple(m for m in metadata if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt, at.MultipleOf)))
        return [Leaf(path, tp.__name__, bounds)]
    raise AssertionError(f"{'.'.join(path)}: the walk does not know type {tp!r}; teach it (and give a range)")


LEAVES = _walk(Params, (), [])
NUMERIC = [leaf for leaf in LEAVES if leaf.kind in ("int", "float")]
ENUMS = [leaf for leaf in LEAVES if leaf.kind == "enum"]


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    import copy

    tree = copy.deepcopy(BASE)
    node = tree
    for p in path[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return tree


def _refused(path: tuple[str, ...], value: Any) -> str:
    with pytest.raises(ParamsError) as err:
        params_from_dict(_with(path, value), source="test.yaml")
    return str(err.value)


def test_the_walk_reaches_every_section():
    keys = {leaf.key for leaf in LEAVES}
    # spot checks across the tree: nested, optional section, list item, dict value, list of enums
    for key in ("fgrpo.rounds", "model.tiny.hidden_size", "judges.model_judge.timeout_s", "data.benchmarks.0.limit",
                "eval.tolerances.accuracy", "fgrpo.constraints.0", "data.synthetic.tasks.0", "sft.lr_scheduler",
                "data.benchmarks.0.name", "fgrpo.mode"):
        assert key in keys, key
    assert len(NUMERIC) > 70


@pytest.mark.parametrize("leaf", NUMERIC, ids=lambda leaf: leaf.key)
def test_every_numeric_field_declares_its_range(leaf):
    assert any(isinstance(b, (at.Ge, at.Gt, at.Le, at.Lt)) for b in leaf.bounds), (
        f"{leaf.key} has no declared range: give it Field(ge=/gt=/le=/lt=)")


def _out_of_range(leaf: Leaf) -> st.SearchStrategy:
    opts = []
    for b in leaf.bounds:
        if leaf.kind == "int":
            if isinstance(b, at.Ge):
                opts.append(st.integers(max_value=int(math.ceil(b.ge)) - 1))
            elif isinstance(b, at.Gt):
                opts.append(st.integers(max_value=int(math.floor(b.gt))))
            elif isinstance(b, at.Le):
                opts.append(st.integers(min_value=int(math.floor(b.le)) + 1))
            elif isinstance(b, at.Lt):
                opts.append(st.integers(min_value=int(math.ceil(b.lt))))
            elif isinstance(b, at.MultipleOf):
                lo = max([x.ge for x in leaf.bounds if isinstance(x, at.Ge)], default=1)
                opts.append(st.integers(min_value=lo, max_value=10**6).filter(lambda v, m=b.multiple_of: v % m))
        else:
            if isinstance(b, at.Ge):
                opts.append(st.floats(max_value=b.ge, exclude_max=True, allow_nan=False, allow_infinity=False))
            elif isinstance(b, at.Gt):
                opts.append(st.floats(max_value=b.gt, allow_nan=False, allow_infinity=False))
            elif isinstance(b, at.Le):
                opts.append(st.floats(min_value=b.le, exclude_min=True, allow_nan=False, allow_infinity=False))
            elif isinstance(b, at.Lt):
                opts.append(st.floats(min_value=b.lt, allow_nan=False, allow_infinity=False))
    if leaf.kind == "float":  # NaN passes every comparison silently: refused outright, as inf is
        opts.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(opts)


@pytest.mark.parametrize("leaf", [leaf for leaf in NUMERIC if leaf.bounds], ids=lambda leaf: leaf.key)
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_out_of_range_values_are_refused_by_name(leaf, data):
    value = data.draw(_out_of_range(leaf))
    msg = _refused(leaf.path, value)
    line = next((ln for ln in msg.splitlines() if ln.strip().startswith(f"{leaf.key}:")), None)
    assert line is not None, f"{leaf.key} = {value!r}: the error does not name the key:\n{msg}"
    assert repr(value) in line, line  # the value
    assert any(w in line for w in ("greater than", "less than", "multiple of", "finite")), line  # what is allowed


@pytest.mark.parametrize("leaf", ENUMS, ids=lambda leaf: leaf.key)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_enumerated_fields_refuse_values_outside_their_set(leaf, data):
    value = data.draw(st.text(max_size=12).filter(lambda v: v not in leaf.allowed))
    msg = _refused(leaf.path, value)
    line = next((ln for ln in msg.splitlines() if ln.strip().startswith(f"{leaf.key}:")), None)
    assert line is not None and repr(value) in line, msg
    assert repr(str(leaf.allowed[0])) in line or str(leaf.allowed[0]) in line, line  # lists what is allowed


# --------------------------------------------------------------------------------------------
# The issue's examples, the CLI, cross-field rules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, allowed", [
    ("fgrpo.rounds=-3", "greater than or equal to 1"),
    ("fgrpo.tau_consistency=1.5", "less than or equal to 1"),
    ("rollout.group_size=1", "greater than or equal to 2"),
    ("fgrpo.lr=-1", "greater than 0"),
    ("fgrpo.lambda_max=-2", "greater than or equal to 0"),
    ("rollout.temperature=-1", "greater than or equal to 0"),
    ("rollout.max_tokens=0", "greater than or equal to 1"),
    ("fgrpo.clip_low=2", "less than 1"),
    ("sft.lr_scheduler=cosin", "'cosine'"),
])
def test_the_issue_examples_are_refused(override, allowed):
    with pytest.raises(ParamsError) as err:
        load_params(ROOT / "params/tiny.yaml", [override])
    key, value = override.split("=")
    assert f"{key}: " in str(err.value) and allowed in str(err.value) and f"(got {yaml.safe_load(value)!r})" in str(err.value)


def test_fgrpo_train_exits_2_before_anything_starts(tmp_path, monkeypatch, capsys):
    import fgrpo_core.train.setup as setup
    from flows.cli import main

    def boom(*a, **k):
        raise AssertionError("the trainer was created")

    monkeypatch.setattr(setup, "create_trainer", boom)
    out, runs = tmp_path / "ckpt", tmp_path / "runs"
    rc = main(["train", "--params", str(ROOT / "params/tiny.yaml"), "--set", "fgrpo.rounds=-3",
               "--set", f"fgrpo.out_dir={out}", "--set", f"fgrpo.run_dir={runs}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "fgrpo.rounds: Input should be greater than or equal to 1 (got -3)" in err, err
    assert not out.exists() and not runs.exists()
    rc = main(["train", "--params", str(ROOT / "params/tiny.yaml"), "--rounds", "0",
               "--set", f"fgrpo.out_dir={out}", "--set", f"fgrpo.run_dir={runs}"])
    assert rc == 2 and "--rounds = 0: must be >= 1" in capsys.readouterr().err
    assert not out.exists() and not runs.exists()


@pytest.mark.parametrize("overrides, message", [
    (["model.min_pixels=20000", "model.max_pixels=12544"], "model.min_pixels = 20000 must be <= model.max_pixels = 12544"),
    (["model.tiny.hidden_size=130"], "model.tiny.hidden_size = 130 must be a multiple of model.tiny.num_attention_heads = 4"),
    (["model.tiny.num_key_value_heads=3"], "model.tiny.num_attention_heads = 4 must be a multiple of model.tiny.num_key_value_heads = 3"),
    (["model.tiny.vision_num_heads=3"], "model.tiny.vision_hidden_size = 64 must be a multiple of model.tiny.vision_num_heads = 3"),
    (["data.synthetic.min_objects=4", "data.synthetic.max_objects=3"], "data.synthetic.min_objects = 4 must be <= data.synthetic.max_objects = 3"),
    (["sft.per_device_batch_size=5", "sft.effective_batch_size=16"], "sft.effective_batch_size = 16 must be a multiple of sft.per_device_batch_size = 5"),
    (["fgrpo.update_batch=32", "fgrpo.rollout_batch=16"], "fgrpo.update_batch = 32 must be <= fgrpo.rollout_batch = 16"),
    (["fgrpo.lambda_init=6", "fgrpo.lambda_max=5"], "fgrpo.lambda_init = 6.0 must be <= fgrpo.lambda_max = 5.0"),
    (["fgrpo.constraints=[consistency, consistency]"], "fgrpo.constraints = ['consistency', 'consistency'] must not repeat"),
    (["judges.semantic=model"], "judges.model_judge is required: judges.semantic is 'model'"),
])
def test_cross_field_rules_name_their_keys(overrides, message):
    with pytest.raises(ParamsError) as err:
        load_params(ROOT / "params/tiny.yaml", overrides)
    assert message in str(err.value), str(err.value)


def test_uneven_last_mini_batch_stays_allowed():
    p = load_params(ROOT / "params/tiny.yaml", ["fgrpo.rollout_batch=3", "fgrpo.update_batch=2"])
    assert (p.fgrpo.rollout_batch, p.fgrpo.update_batch) == (3, 2)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads(path):
    load_params(path)


# --------------------------------------------------------------------------------------------
# The paper's values: one home each
# --------------------------------------------------------------------------------------------
PAPER = {  # Kancheti et al. 2026 (docs/training.md)
    FGRPOParams: dict(tau_consistency=0.95, tau_semantic=0.95, tau_spatial=0.65, lambda_lr=0.05, lambda_max=5.0,
                      lambda_init=1.0, lambda_min_count=8, clip_low=0.2, clip_high=0.28, beta=0.01, lr=1e-6,
                      weight_decay=0.01, grad_clip=1.0, rounds=1000, rollout_batch=128, update_batch=64,
                      freeze_vision=True),
    SFTParams: dict(epochs=3.0, lr=1e-6, lr_scheduler="cosine", warmup_ratio=0.03, effective_batch_size=32,
                    weight_decay=0.01, freeze_vision=True),
    RolloutParams: dict(group_size=5, max_tokens=1024),
}


@pytest.mark.parametrize("cls", list(PAPER), ids=lambda c: c.__name__)
def test_params_defaults_are_the_papers_values_and_say_so(cls):
    for name, value in PAPER[cls].items():
        info = cls.model_fields[name]
        assert info.default == value, (cls.__name__, name, info.default)
        assert "paper" in (info.description or ""), f"{cls.__name__}.{name}: description does not give the paper's value"
    assert "3 epochs" in FGRPOParams.model_fields["epochs"].description  # the paper's RL epochs, beside ours


def _leaves(tree: dict, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


@pytest.mark.parametrize("path", PAPER_PRESETS, ids=lambda p: p.name)
def test_paper_presets_do_not_repeat_defaults(path):
    raw = yaml.safe_load(path.read_text())
    defaults = Params().model_dump(mode="json")
    repeated = []
    for keys, value in _leaves(raw):
        node = defaults
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node == value and keys[0] != "name":
            repeated.append(".".join(keys))
    assert not repeated, f"{path.name} repeats defaults (their one home is fgrpo_core/config.py): {repeated}"
    p = load_params(path)
    assert p.fgrpo.freeze_vision and p.sft.freeze_vision and p.sft.weight_decay == 0.01


def test_tiny_presets_train_their_random_vision_tower_and_keep_no_weight_decay():
    for name in ("tiny.yaml", "repro-tiny.yaml"):
        p = load_params(ROOT / "params" / name)
        assert not p.fgrpo.freeze_vision and not p.sft.freeze_vision and p.sft.weight_decay == 0.0, name


def _no_default(func, names):
    sig = inspect.signature(func)
    for n in names:
        par = sig.parameters[n]
        assert par.default is inspect.Parameter.empty, f"{func.__qualname__}({n}=...) repeats a default"
        assert par.kind is inspect.Parameter.KEYWORD_ONLY, f"{func.__qualname__}: {n} must be keyword-only"


def test_core_functions_take_the_papers_values_without_defaults():
    from fgrpo_core.lagrangian import DualAscent
    from fgrpo_core.loss import policy_loss
    from fgrpo_core.train.update import UpdateSettings

    _no_default(DualAscent.__init__, ["lr", "init", "max_value", "min_count"])
    _no_default(policy_loss, ["clip_low", "clip_high", "beta", "aggregation"])
    fields = {f.name: f for f in dataclasses.fields(UpdateSettings)}
    for name, f in fields.items():
        if name != "mixed_precision":  # accelerate's setting, not a params field
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, name
            assert f.kw_only, name
    s = UpdateSettings.from_params(FGRPOParams(), RolloutParams())
    assert (s.lr, s.weight_decay, s.clip_low, s.clip_high, s.beta, s.freeze_vision) == (1e-6, 0.01, 0.2, 0.28, 0.01, True)


# --------------------------------------------------------------------------------------------
# Enumerations written in config.py stay equal to the code they name
# --------------------------------------------------------------------------------------------
def test_enumerations_match_the_code():
    from transformers import SchedulerType

    from fgrpo_core.config import BenchmarkName, LRScheduler, SyntheticTask
    from fgrpo_core.data.importers import IMPORTERS
    from fgrpo_core.data.synthetic import TASKS

    assert set(get_args(SyntheticTask)) == set(TASKS)
    from fgrpo_core.config import SyntheticDataParams
    from fgrpo_core.data.synthetic import MAX_OBJECTS

    for f in ("min_objects", "max_objects"):  # the generator's own limit, 2..MAX_OBJECTS
        bounds = SyntheticDataParams.model_fields[f].metadata
        assert at.Le(MAX_OBJECTS) in bounds and at.Ge(2) in bounds, (f, bounds)
    assert set(get_args(BenchmarkName)) == set(IMPORTERS)
    assert set(get_args(LRScheduler)) == {s.value for s in SchedulerType}
