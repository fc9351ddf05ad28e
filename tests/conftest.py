"""Shared fixtures. Expensive ones (the tiny model, one vLLM engine) are session-scoped."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny Qwen2.5-VL, built once per test session (real classes, random weights)."""
    from fgrpo_core.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl")


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """ONE live vLLM engine for the whole test session (starting one costs 20-60 s on CPU).

    Tests that push other weights into it must push the tiny model's weights back when done
    (use the ``restore_vllm_weights`` fixture).
    """
    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model_dir, dtype="float32", max_model_len=2048, seed=0)
    yield engine
    engine.close()


@pytest.fixture
def restore_vllm_weights(vllm_engine, tiny_model_dir):
    yield vllm_engine
    vllm_engine.load_weights_from(tiny_model_dir)


# ----------------------------------------------------------------------------------------------
# Tiers, set from what a test really uses (hand-set markers missed tests that boot vLLM, a Prefect
# server or a two-process launch). A test gets a marker when its own code, the code of every
# fixture it uses, or any function or class of the test package these call (followed by name,
# transitively) shows the thing:
#   engine  the tiny model or a real vLLM engine (fixtures below, or ``VLLMEngine(`` in the code)
#   server  a Prefect server: ``prefect server start`` or ``prefect_test_harness`` (which starts one)
#   launch  child Python processes: ``accelerate launch``, the CLI, ``python -m ...``
#   slow    set by hand on whole-stage runs; every ``launch`` and ``server`` test is slow too
# ``bash scripts/test.sh --fast`` runs what has none of them.
# ----------------------------------------------------------------------------------------------
import inspect
import re
import types

TIER_FIXTURES = {"engine": {"tiny_model_dir", "vllm_engine", "restore_vllm_weights"}}
TIER_CODE = {
    "engine": re.compile(r"\bVLLMEngine\("),
    "server": re.compile(r"prefect_test_harness|\"server\",\s*\"start\""),
    "launch": re.compile(r"\bsys\.executable\b|\"accelerate\"|\"launch\"|subprocess\.Popen\(\[\s*\"fgrpo\""),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _code_reached(item) -> str:
    """The source of the test, its fixtures, and the test package's functions/classes they name."""
    roots = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures a test function uses
    for defs in (info.name2fixturedefs.values() if info else ()):
        roots += [d.func for d in defs]
    seen: set[int] = set()
    todo = [r for r in roots if r is not None]
    texts = []
    while todo:
        obj = todo.pop()
        obj = inspect.unwrap(obj) if callable(obj) else obj
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        text = _source(obj)
        texts.append(text)
        scope = getattr(inspect.getmodule(obj), "__dict__", {})
        for name in set(_NAME.findall(text)):
            target = scope.get(name)
            if isinstance(target, (types.FunctionType, type)) and (target.__module__ or "").startswith("tests"):
                todo.append(target)
    return "\n".join(texts)


def tiers(item) -> set[str]:
    found = {m for m, names in TIER_FIXTURES.items() if names & set(getattr(item, "fixturenames", ()))}
    code = _code_reached(item)
    found |= {m for m, pattern in TIER_CODE.items() if pattern.search(code)}
    if found & {"launch", "server"}:
        found.add("slow")
    return found


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker in sorted(tiers(item) - {m.name for m in item.iter_markers()}):
            item.add_marker(marker)


# ----------------------------------------------------------------------------------------------
# Per-test timeout (pyproject: [tool.pytest.ini_options] timeout, timeout_method = "thread"). The
# thread method is the one that fires while the main thread is stuck in C (a vLLM engine or a
# torch collective waiting forever: a signal handler would never run there); it dumps every
# thread's stack and ends the run. Its dump names no test, so the test is named first here.
# ----------------------------------------------------------------------------------------------
import sys as _sys
import threading as _threading


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: `-p no:timeout` still works
def pytest_timeout_set_timer(item, settings):
    if settings.method != "thread":
        return None  # pytest-timeout's own implementation

    import pytest_timeout

    def fire():
        _sys.stderr.write(f"\nTIMEOUT: {item.nodeid} ran past {settings.timeout:g} s "
                          "(pyproject timeout); every thread's stack follows\n")
        _sys.stderr.flush()
        pytest_timeout.timeout_timer(item, settings)

    timer = _threading.Timer(settings.timeout, fire)
    timer.name = f"timeout {item.nodeid}"
    timer.daemon = True

    def cancel():
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel
    timer.start()
    return True
