"""A stand-in ``vllm`` module whose ``LLM`` records the arguments it is built with (no engine starts)."""

from __future__ import annotations

import sys
import types


def install_recording_vllm(monkeypatch) -> dict:
    """Put the stand-in in ``sys.modules`` for this test; returns the dict each ``vllm.LLM(**kwargs)`` updates."""
    seen: dict = {}

    class RecordingLLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_tokenizer(self):
            return None

    fake = types.ModuleType("vllm")
    fake.LLM = RecordingLLM
    fake.envs = types.SimpleNamespace(disable_envs_cache=lambda: None)  # VLLMEngine resets vLLM's env cache
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return seen
