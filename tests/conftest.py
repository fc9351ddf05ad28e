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
