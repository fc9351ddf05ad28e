"""Rollout engines on the tiny model: vLLM and transformers agree, and vLLM takes new weights
in place (docs/method.md#stale-weights-in-vllm)."""

import warnings

import pytest
import torch
from PIL import Image

from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, SamplingSettings

pytestmark = pytest.mark.engine

GREEDY = SamplingSettings(n=1, temperature=0.0, max_tokens=12)


def _prompts(k=4):
    return [
        PromptInput(
            prompt_id=f"p{i}",
            messages=build_messages(f"Question {i}: which object is left?", ["red circle", "blue square"]),
            image=Image.new("RGB", (112, 112), (40 * i, 200 - 30 * i, 90)),
        )
        for i in range(k)
    ]


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    from fgrpo_core.rollout.hf_engine import HFEngine

    return HFEngine.from_pretrained(str(tiny_model_dir))


def _ids(batch):
    return [r.token_ids for r in batch.rollouts]


def test_vllm_matches_transformers_greedy(vllm_engine, hf_engine):
    prompts = _prompts()
    a, b = hf_engine.generate(prompts, GREEDY), vllm_engine.generate(prompts, GREEDY)
    assert [(r.prompt_id, r.sample_index) for r in b.rollouts] == [(p.prompt_id, 0) for p in prompts]
    assert _ids(a) == _ids(b)
    for x, y in zip(a.rollouts, b.rollouts):
        assert len(y.logprobs) == len(y.token_ids)
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-3
        assert y.text == x.text and y.finish_reason in ("stop", "length")
        assert y.prompt_token_ids, "prompt ids recorded"


def test_weight_push_in_place_changes_vllm_and_matches_transformers(vllm_engine, hf_engine, restore_vllm_weights):
    prompts = _prompts()
    before = _ids(vllm_engine.generate(prompts, GREEDY))
    version = vllm_engine.policy_version
    original = {n: p.detach().clone() for n, p in hf_engine.model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    perturbed = {n: t + 0.05 * torch.randn(t.shape, generator=gen) for n, t in original.items()}
    try:
        hf_engine.update_weights(perturbed.items())
        assert vllm_engine.update_weights(perturbed.items()) == version + 1
        after_vllm = _ids(vllm_engine.generate(prompts, GREEDY))
        after_hf = _ids(hf_engine.generate(prompts, GREEDY))
        assert after_vllm == after_hf, "vLLM and transformers disagree after the push"
        changed = sum(x != y for x, y in zip(after_vllm, before))
        assert changed == len(prompts), f"only {changed}/{len(prompts)} completions changed: stale weights?"
    finally:
        hf_engine.update_weights(original.items())


def test_refresh_from_checkpoint_dir_restores_original_policy(vllm_engine, tiny_model_dir, restore_vllm_weights):
    prompts = _prompts(2)
    reference = _ids(vllm_engine.generate(prompts, GREEDY))
    zeros = [(n, torch.zeros_like(p)) for n, p in _tiny_state(tiny_model_dir).items() if n.endswith("lm_head.weight")]
    vllm_engine.update_weights(zeros)
    assert _ids(vllm_engine.generate(prompts, GREEDY)) != reference
    vllm_engine.load_weights_from(tiny_model_dir)
    assert _ids(vllm_engine.generate(prompts, GREEDY)) == reference
    with pytest.raises(FileNotFoundError):
        vllm_engine.load_weights_from(tiny_model_dir / "nowhere")


def test_seeded_sampling_is_reproducible_and_order_independent(vllm_engine):
    prompts = _prompts(3)
    s = SamplingSettings(n=3, temperature=1.0, max_tokens=10, seed=7)
    a = vllm_engine.generate(prompts, s)
    b = vllm_engine.generate(list(reversed(prompts)), s)
    assert len(a.rollouts) == 9 and [r.sample_index for r in a.rollouts[:3]] == [0, 1, 2]
    by_a, by_b = a.by_prompt(), b.by_prompt()
    for pid in by_a:
        assert [r.token_ids for r in by_a[pid]] == [r.token_ids for r in by_b[pid]]
    # Samples within a group differ (temperature 1 on a random model).
    assert len({tuple(r.token_ids) for r in by_a["p0"]}) > 1


def _tiny_state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_trainer_keeps_its_thread_count_beside_an_in_process_engine(vllm_engine):
    # vLLM's CPU worker makes torch.set_num_threads a no-op; our engine puts the real one back,
    # so fgrpo.cpu_threads / sft.cpu_threads still apply in a process holding the engine.
    from fgrpo_core.train.threads import cpu_threads

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "not applied" would be a warning
        with cpu_threads(target, field="fgrpo.cpu_threads"):
            assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
