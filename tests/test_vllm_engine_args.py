"""What VLLMEngine asks vLLM for, recorded by a stand-in ``vllm`` module (no engine starts).

- Pixel bounds go as the image processor's ``size`` (shortest_edge/longest_edge): passing
  ``min_pixels``/``max_pixels`` to a processor call is deprecated in transformers 5 and warned
  on every call. Measured with the real engine on the tiny model (a 224x224 image, bounds
  3136..12544 pixels): 127 prompt tokens either way (175 without bounds), and no FutureWarning
  with ``size``.
- vLLM's log level defaults to WARNING (its INFO lines flood a stage's log) unless the
  environment sets VLLM_LOGGING_LEVEL.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.recording_vllm import install_recording_vllm


@pytest.fixture
def recorded(monkeypatch):
    seen = install_recording_vllm(monkeypatch)
    # VLLMEngine sets these in os.environ: undone after the test
    for var in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_LEVEL"):
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    vllm_logger = logging.getLogger("vllm")
    monkeypatch.setattr(vllm_logger, "level", vllm_logger.level)
    return seen


def test_pixel_bounds_are_the_processor_size(recorded, tmp_path):
    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    VLLMEngine(tmp_path / "m", min_pixels=3136, max_pixels=12544)
    assert recorded["mm_processor_kwargs"] == {"size": {"shortest_edge": 3136, "longest_edge": 12544}}
    VLLMEngine(tmp_path / "m")
    assert recorded["mm_processor_kwargs"] is None  # the checkpoint's own processor config


def test_vllm_logs_warnings_only_unless_asked(recorded, tmp_path, monkeypatch):
    import os

    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    VLLMEngine(tmp_path / "m")
    assert os.environ["VLLM_LOGGING_LEVEL"] == "WARNING"  # engine-core and worker processes read it
    assert logging.getLogger("vllm").level == logging.WARNING  # this process's vllm logger
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "info")
    VLLMEngine(tmp_path / "m")
    assert logging.getLogger("vllm").level == logging.INFO  # the environment wins


def test_every_engine_built_from_params_gets_the_pixel_bounds(recorded, tmp_path):
    # Training's engine (train/setup.make_engine) used to leave the bounds out, while evaluation
    # passed them: one builder, VLLMEngine.from_params, serves both (and the judges, the demo).
    from fgrpo_core.config import ModelParams, RolloutParams
    from fgrpo_core.train.setup import make_engine

    model = ModelParams(min_pixels=3136, max_pixels=12544, trust_remote_code=False)
    rollout = RolloutParams(max_model_len=1024, enforce_eager=True)
    make_engine(tmp_path / "m", rollout, model, seed=3)
    assert recorded["mm_processor_kwargs"] == {"size": {"shortest_edge": 3136, "longest_edge": 12544}}
    assert (recorded["max_model_len"], recorded["seed"], recorded["enforce_eager"]) == (1024, 3, True)
