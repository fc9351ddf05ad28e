"""SFT warm start (issue 6) on the tiny model and synthetic data, end to end on CPU.

What is pinned here:
- the encoding: the prompt part equals the rollout prompt token for token; only the assistant
  turn carries loss (prompt and image tokens are -100); the pre-encoded collator yields exactly
  TRL's vision collator's batch; over-long samples are dropped (never truncated);
- the stage: the loss falls, the log/plot/summary are written, the checkpoint is a complete
  save_pretrained folder that transformers and vLLM load, the frozen vision tower did not move;
- the point of SFT: the well-formed share of greedy completions on held-out prompts rises
  (sampled through the session's vLLM engine with the checkpoint loaded into it);
- resume: k steps, interruption, resume == N steps in one go (same weights, same log);
  resuming another configuration's checkpoints is refused;
- LoRA: the merged checkpoint has the base model's parameter names;
- ``fgrpo sft --params FILE`` runs the stage.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fgrpo_core.config import SFTParams, SyntheticDataParams
from fgrpo_core.data.schema import to_dataset
from fgrpo_core.data.synthetic import generate_split
from fgrpo_core.prompts import build_messages
from fgrpo_core.records import PromptInput, SamplingSettings
from fgrpo_core.train.sft_data import IGNORE_INDEX, SFTCollator, encode_for_sft, sft_messages

pytestmark = pytest.mark.engine

MIN_PX, MAX_PX = 28 * 28 * 4, 28 * 28 * 1280
SYN = SyntheticDataParams()
# The end-to-end run: small enough for CI on 2 cores, long enough to learn the format.
E2E_SAMPLES = 256
E2E = SFTParams(epochs=3.0, lr=5e-3, warmup_ratio=0.05, per_device_batch_size=8, effective_batch_size=8, weight_decay=0.0,
                max_length=1024, save_steps=10**6, logging_steps=1, dataloader_workers=0, cpu_threads=1)


def _staged(root: Path, split: str, n: int, with_trace: bool) -> Path:
    path = root / split
    if not path.exists():
        to_dataset(generate_split(SYN, split, n, MIN_PX, MAX_PX, with_trace=with_trace)).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sft-data")


@pytest.fixture(scope="module")
def sft_split(data_root):
    return _staged(data_root, "sft", E2E_SAMPLES, with_trace=True)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from fgrpo_core.models.loading import load_processor

    return load_processor(tiny_model_dir)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
def test_prompt_part_is_the_rollout_prompt_and_only_the_assistant_turn_has_labels(processor, tmp_path):
    from fgrpo_core.train.policy import encode_prompt

    samples = generate_split(SYN, "sft", 3, MIN_PX, MAX_PX, with_trace=True)
    enc = encode_for_sft([("mem", to_dataset(samples))], processor, 4096, tmp_path)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    for s, row in zip(samples, enc.dataset):
        ids, labels = list(row["input_ids"]), list(row["labels"])
        prompt = encode_prompt(processor, PromptInput(s.id, build_messages(s.question, s.choices), s.image))
        p = len(prompt.input_ids)
        # Training sees exactly the prompt rollouts see (image placeholders expanded the same way).
        assert ids[:p] == prompt.input_ids
        assert image_id in ids[:p]
        # Loss on the assistant turn only: every prompt token (image tokens included) is -100 ...
        assert all(lab == IGNORE_INDEX for lab in labels[:p])
        # ... and the labelled tokens are the trace followed by the end-of-turn token, nothing else.
        target = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
        assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ids, labels))
        assert processor.tokenizer.decode(target) == s.trace + "<|im_end|>"
        assert labels[p:p + len(target)] == target, "the labelled span starts right after the prompt"


def test_pre_encoded_batches_equal_trls_vision_collator(processor, tmp_path):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    samples = generate_split(SYN, "sft", 5, MIN_PX, MAX_PX, with_trace=True)
    enc = encode_for_sft([("mem", to_dataset(samples))], processor, 4096, tmp_path)
    ours = SFTCollator(processor)([enc.dataset[i] for i in range(5)])
    trl = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)(
        [{"messages": sft_messages(s.question, s.choices, s.trace), "images": [s.image]} for s in samples]
    )
    assert set(ours) == set(trl)
    for key in trl:
        assert torch.equal(ours[key], trl[key]), key
    assert (ours["labels"][ours["attention_mask"] == 0] == IGNORE_INDEX).all(), "padding carries no loss"


def test_over_long_samples_are_dropped_never_truncated(processor, tmp_path):
    samples = generate_split(SYN, "sft", 6, MIN_PX, MAX_PX, with_trace=True)
    samples[2].trace = "<think>" + "The red circle is left of the blue square. " * 40 + "</think><answer>A</answer>"
    full = encode_for_sft([("mem", to_dataset(samples))], processor, 10**6, tmp_path / "a")
    lengths = {row["id"]: int(row["n_tokens"]) for row in full.dataset}
    limit = max(n for i, n in lengths.items() if i != samples[2].id)
    assert lengths[samples[2].id] > limit
    cut = encode_for_sft([("mem", to_dataset(samples))], processor, limit, tmp_path / "b")
    assert cut.dropped_ids == [samples[2].id] and cut.n_source == 6 and len(cut.dataset) == 5
    for row in cut.dataset:  # the kept samples are whole
        assert len(row["input_ids"]) == lengths[row["id"]] == int(row["n_tokens"])
    with pytest.raises(ValueError, match="no SFT sample fits max_length=10"):
        encode_for_sft([("mem", to_dataset(samples))], processor, 10, tmp_path / "c")


def test_a_row_without_trace_is_named(processor, tmp_path):
    samples = generate_split(SYN, "rl", 3, MIN_PX, MAX_PX, with_trace=False)  # RL rows carry no trace
    with pytest.raises(ValueError, match=r"data/rl: row 0 .*field 'trace'"):
        encode_for_sft([("data/rl", to_dataset(samples))], processor, 4096, tmp_path)


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------
def test_accumulation_steps_make_the_effective_batch_exact():
    from fgrpo_core.train.sft import accumulation_steps

    # paper: effective 32 = 4 per device x 2 devices x 4 steps
    assert accumulation_steps(SFTParams(per_device_batch_size=4, effective_batch_size=32), 2) == 4
    assert accumulation_steps(SFTParams(per_device_batch_size=8, effective_batch_size=8), 1) == 1
    with pytest.raises(ValueError, match=r"effective_batch_size=32 is not a multiple .* 3 x 2"):
        accumulation_steps(SFTParams(per_device_batch_size=3, effective_batch_size=32), 2)


def test_latest_checkpoint_skips_one_cut_off_while_saving(tmp_path):
    from fgrpo_core.train.sft import latest_checkpoint

    assert latest_checkpoint(tmp_path / "missing") is None
    for step, complete in ((2, True), (10, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # not 2 (older), not 30 (partial)


def test_loss_rows_keep_one_entry_per_step_in_order():
    from fgrpo_core.train.sft_log import loss_rows

    history = [
        {"loss": 3.0, "step": 1, "learning_rate": 0.0},
        {"loss": 2.5, "step": 2},
        {"train_runtime": 1.0, "step": 2},  # the end-of-train summary: not a loss row
        {"loss": 2.4, "step": 2},  # re-logged after a resume: the later entry wins
        {"loss": 2.0, "step": 3},
    ]
    assert [(r["step"], r["loss"]) for r in loss_rows(history)] == [(1, 3.0), (2, 2.4), (3, 2.0)]


# ---------------------------------------------------------------------------------------------
# The stage, end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, sft_split, tmp_path_factory):
    from fgrpo_core.train.sft import run_sft

    out = tmp_path_factory.mktemp("sft-run")
    return run_sft(E2E, tiny_model_dir, [sft_split], out)


@pytest.mark.slow
def test_loss_falls_and_the_run_is_recorded(sft_run):
    steps = -(-E2E_SAMPLES // E2E.per_device_batch_size) * int(E2E.epochs)
    assert sft_run.global_step == steps and sft_run.n_train == E2E_SAMPLES and sft_run.n_dropped == 0
    rows = list(csv.DictReader(sft_run.log_csv.open()))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # random init: ~ln(vocab) = ln(1088) ~ 7.0; the traces are highly regular text
    assert first > 6.0 and last < 0.5 * first, (first, last)
    assert sft_run.plot_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(sft_run.summary_json.read_text())
    assert summary["global_step"] == steps and summary["final_loss"] == pytest.approx(losses[-1])
    assert summary["compute_dtype"] == "float32" and summary["gradient_accumulation_steps"] == 1


@pytest.mark.slow
def test_checkpoint_is_complete_and_the_vision_tower_did_not_move(sft_run, tiny_model_dir):
    from safetensors.torch import load_file

    from fgrpo_core.models.loading import load_policy, load_processor

    files = {p.name for p in sft_run.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in files), "safetensors only"
    assert not list(sft_run.model_dir.parent.glob(".model.tmp-*")), "no temporary folder left"
    base, tuned = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(sft_run.model_dir / "model.safetensors"))
    assert base.keys() == tuned.keys()
    vision = [k for k in base if ".visual." in k or k.startswith("visual.")]
    assert vision and all(torch.equal(base[k], tuned[k]) for k in vision), "frozen vision tower moved"
    assert not torch.equal(base["lm_head.weight"], tuned["lm_head.weight"])
    load_policy(sft_run.model_dir)  # transformers loads it
    proc = load_processor(sft_run.model_dir)
    assert proc.tokenizer.convert_tokens_to_ids("<think>") == load_processor(tiny_model_dir).tokenizer.convert_tokens_to_ids("<think>")


def _grade_on_val(engine, samples):
    from fgrpo_core.rewards import grade_completions

    prompts = [PromptInput(s.id, build_messages(s.question, s.choices), s.image) for s in samples]
    batch = engine.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_tokens=192, seed=0))
    grades = grade_completions(
        [r.text for r in batch.rollouts], [s.answer for s in samples], [s.choices for s in samples],
        [[b.as_list() for b in s.boxes] for s in samples],
    )
    n = len(grades)
    return sum(g.fmt for g in grades) / n, sum(g.acc for g in grades) / n, batch


@pytest.mark.slow
def test_well_formed_share_rises_on_held_out_prompts_through_vllm(sft_run, vllm_engine, restore_vllm_weights):
    val = generate_split(SYN, "val", 32, MIN_PX, MAX_PX)  # held out: another split's scenes
    fmt_before, acc_before, _ = _grade_on_val(vllm_engine, val)
    vllm_engine.load_weights_from(sft_run.model_dir)  # the checkpoint loads in vLLM
    fmt_after, acc_after, batch = _grade_on_val(vllm_engine, val)
    print(f"\nwell-formed {fmt_before:.2f} -> {fmt_after:.2f}, accuracy {acc_before:.2f} -> {acc_after:.2f}"
          f"\nexample: {batch.rollouts[0].text!r}")
    assert fmt_before <= 0.05, "the random tiny model should not write the format"
    assert fmt_after >= 0.6, f"well-formed share after SFT only {fmt_after:.2f}"


# ---------------------------------------------------------------------------------------------
# Resume, LoRA, the command
# ---------------------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


def _interrupt_after_save(step: int):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise _Interrupt(step)

    return Stop()


SHORT = SFTParams(epochs=1.0, lr=3e-3, warmup_ratio=0.0, per_device_batch_size=4, effective_batch_size=4, weight_decay=0.0,
                  max_length=1024, save_steps=2, logging_steps=1, dataloader_workers=0, cpu_threads=1)


@pytest.fixture(scope="module")
def short_split(data_root):
    return _staged(data_root, "sft-short", 16, with_trace=True)  # 16 samples / 4 = 4 steps


@pytest.mark.slow
def test_resume_after_interruption_equals_one_uninterrupted_run(tiny_model_dir, short_split, tmp_path):
    from safetensors.torch import load_file

    from fgrpo_core.train.sft import run_sft

    straight = run_sft(SHORT, tiny_model_dir, [short_split], tmp_path / "straight")
    assert straight.global_step == 4 and straight.resumed_from_step is None

    with pytest.raises(_Interrupt):
        run_sft(SHORT, tiny_model_dir, [short_split], tmp_path / "cut", callbacks=[_interrupt_after_save(2)])
    assert (tmp_path / "cut" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (tmp_path / "cut" / "model").exists(), "no final model from an interrupted run"
    resumed = run_sft(SHORT, tiny_model_dir, [short_split], tmp_path / "cut")
    assert resumed.resumed_from_step == 2 and resumed.global_step == 4

    a, b = load_file(str(straight.model_dir / "model.safetensors")), load_file(str(resumed.model_dir / "model.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, f"resumed weights differ from the uninterrupted run by {worst}"
    rows = lambda r: [(int(x["step"]), round(float(x["loss"]), 5)) for x in csv.DictReader(r.log_csv.open())]
    assert rows(resumed) == rows(straight), "the resumed log continues the interrupted one"

    other = SHORT.model_copy(update={"lr": 1e-4})
    with pytest.raises(ValueError, match=r"another run \(differs in: sft.lr\)"):
        run_sft(other, tiny_model_dir, [short_split], tmp_path / "cut")


@pytest.mark.slow
def test_lora_checkpoint_is_merged_into_base_names(tiny_model_dir, short_split, tmp_path):
    from safetensors.torch import load_file

    from fgrpo_core.train.sft import run_sft

    params = SHORT.model_copy(update={"lora": True, "lora_r": 4, "save_steps": 10**6})
    result = run_sft(params, tiny_model_dir, [short_split], tmp_path / "lora")
    base, tuned = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(result.model_dir / "model.safetensors"))
    assert tuned.keys() == base.keys(), "LoRA weights must be merged (vLLM loads base names only)"
    moved = [k for k in base if not torch.equal(base[k], tuned[k])]
    # only the language model's adapted projections move (saved in the hub layout: model.layers.*)
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert moved and all("visual" not in k and k.split(".")[-2] in targets and k.endswith(".weight") for k in moved), moved
    assert any("q_proj" in k for k in moved)


@pytest.mark.slow
def test_fgrpo_sft_command(tiny_model_dir, short_split, tmp_path):
    import yaml

    from flows.cli import main

    params_file = tmp_path / "p.yaml"
    params_file.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model_dir)},
        "data": {"out_dir": str(short_split.parent)},
        "sft": SHORT.model_dump(mode="json") | {"out_dir": str(tmp_path / "ckpt"), "epochs": 0.5},
    }))
    assert main(["sft", "--params", str(params_file), "--data", str(short_split)]) == 0
    assert (tmp_path / "ckpt" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ckpt" / "summary.json").read_text())["global_step"] == 2
    assert main(["sft", "--params", str(params_file), "--set", "sft.no_such_key=1"]) == 2


def test_cpu_threads_are_set_and_restored(monkeypatch):
    from fgrpo_core.train import threads

    # torch's own setter is replaced so the test sees every call.
    state, calls = {"n": 3}, []
    monkeypatch.setattr(torch, "get_num_threads", lambda: state["n"])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), state.update(n=n)))
    with threads.cpu_threads(1):
        assert state["n"] == 1
    assert state["n"] == 3 and calls == [1, 3]
    with threads.cpu_threads(None):
        pass
    assert calls == [1, 3], "None leaves the threads alone"
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))  # a no-op setter
    with pytest.warns(UserWarning, match="sft.cpu_threads=1 not applied"):
        with threads.cpu_threads(1, field="sft.cpu_threads"):
            pass
