"""vLLM tensor parallelism (``rollout.tensor_parallel_size``) behind ``VLLMEngine``: an engine
with 2 tensor-parallel workers (engine core and workers in their own processes, weights pushed
through a safetensors file that each worker reads its shard from) samples exactly what the
session's in-process engine (1 worker, weights handed over as tensors) samples, before and after
a weight push. On the CPU, vLLM needs the workers' cores named (``VLLM_CPU_OMP_THREADS_BIND``)."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from safetensors.torch import load_file

from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, SamplingSettings


def _prompts():
    return [PromptInput(f"q{i}", build_messages(f"Which is left? {i}", ["a", "b"]),
                        Image.new("RGB", (56, 56), (40 * i, 90, 30))) for i in range(3)]


def _tokens(engine):
    batch = engine.generate(_prompts(), SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=1))
    return [r.token_ids for r in batch.rollouts]


def test_two_tensor_parallel_workers_sample_what_one_does(tiny_model_dir, restore_vllm_weights, monkeypatch):
    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    cores = sorted(os.sched_getaffinity(0))
    # A machine with fewer cores cannot run this check: that is a failure, never a silent skip
    # (CI has exactly 2 cores).
    assert len(cores) >= 2, f"2 tensor-parallel workers need 2 CPU cores; this process may use {cores}"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}|{cores[1]}")
    one = restore_vllm_weights  # the session engine: in-process, 1 worker
    tp = VLLMEngine(tiny_model_dir, dtype="float32", max_model_len=2048, seed=0, tensor_parallel_size=2,
                    in_process=False)
    try:
        assert not tp.in_process
        assert _tokens(tp) == _tokens(one)
        w = load_file(str(tiny_model_dir / "model.safetensors"))
        pushed = {k: v * 1.01 for k, v in w.items()}
        before = _tokens(one)
        assert one.update_weights(pushed.items()) == one.policy_version
        assert tp.update_weights(pushed.items()) == tp.policy_version == 1
        after = _tokens(one)
        assert after != before  # the push changed what is sampled, so equality below means something
        assert _tokens(tp) == after
    finally:
        tp.close()
