"""Trainer-side log-probs equal the sampler's, and padding never changes them."""

import pytest
import torch
from PIL import Image

from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, SamplingSettings
from fgrpo_core.train.policy import collate, completion_logprobs, encode_prompt


def _prompts(k):
    return [
        PromptInput(f"q{i}", build_messages("Which is closer?" + " really" * i, ["red", "blue", "green"]),
                    Image.new("RGB", (112 if i % 2 else 168, 112), (30 * i, 90, 200 - 20 * i)))
        for i in range(k)
    ]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from fgrpo_core.models.loading import load_policy, load_processor

    return load_policy(tiny_model_dir).eval(), load_processor(tiny_model_dir)


def test_padding_and_batching_do_not_change_logprobs(policy):
    model, proc = policy
    prompts = [encode_prompt(proc, p) for p in _prompts(3)]
    comps = [[100, 200, 300], [50], [70, 80, 90, 100, 110, 120]]
    pad = proc.tokenizer.pad_token_id
    with torch.no_grad():
        together = completion_logprobs(model, collate(prompts, comps, pad))
        for i in range(3):
            alone = completion_logprobs(model, collate([prompts[i]], [comps[i]], pad))
            n = len(comps[i])
            torch.testing.assert_close(together[i, :n], alone[0, :n], atol=1e-4, rtol=0)
            assert torch.all(together[i, n:] == 0)


def test_prompt_encoding_matches_vllm_and_logprobs_match_sampler(policy, vllm_engine):
    model, proc = policy
    prompts = _prompts(2)
    batch = vllm_engine.generate(prompts, SamplingSettings(n=2, temperature=1.0, max_tokens=8, seed=3))
    enc = {p.prompt_id: encode_prompt(proc, p) for p in prompts}
    for r in batch.rollouts:
        assert enc[r.prompt_id].input_ids == r.prompt_token_ids, "processor and vLLM disagree on the prompt"
        assert sum(enc[r.prompt_id].mm_token_type_ids) == int(enc[r.prompt_id].image_grid_thw.prod()) // 4
    seqs = collate([enc[r.prompt_id] for r in batch.rollouts], [r.token_ids for r in batch.rollouts],
                   proc.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = completion_logprobs(model, seqs)
    for i, r in enumerate(batch.rollouts):
        sampler = torch.tensor(r.logprobs)
        # Same function as the sampler, M-RoPE image positions included: with 1-D positions (no
        # mm_token_type_ids) the gap was 3-4e-3; with them it is ~5e-7 (float32 kernel order).
        torch.testing.assert_close(ours[i, : len(r.token_ids)], sampler, atol=2e-5, rtol=0)


def test_vision_tokens_in_a_completion_are_scored_not_fed_as_images(policy):
    from fgrpo_core.train.policy import vision_token_ids

    model, proc = policy
    vis = vision_token_ids(model.config)
    assert model.config.image_token_id in vis and len(vis) == 4
    prompt = encode_prompt(proc, _prompts(1)[0])
    comp = [100, model.config.image_token_id, 101, model.config.vision_start_token_id]
    seqs = collate([prompt], [comp], proc.tokenizer.pad_token_id, vis)
    assert seqs.completion_ids[0].tolist() == comp  # targets keep what was sampled
    n_image = int(prompt.image_grid_thw.prod()) // 4  # 2x2 merge
    assert int((seqs.input_ids == model.config.image_token_id).sum()) == n_image  # only the prompt image
    with torch.no_grad():
        lp = completion_logprobs(model, seqs)
    assert torch.isfinite(lp).all() and lp[0, 1] < 0
