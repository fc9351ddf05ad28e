"""``fgrpo build-tiny-model`` and ``fgrpo rollout-demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_tiny_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo build-tiny-model", description="Build the tiny Qwen2.5-VL locally.")
    ap.add_argument("out_dir", nargs="?", help="model directory to write (default: params model.path)")
    ap.add_argument("--params", help="params file (its model.path and model.tiny are used)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    from fgrpo_core.config import Params, load_params
    from fgrpo_core.models.tiny import build_tiny_model

    params = load_params(args.params, args.overrides) if args.params else Params()
    out = args.out_dir or params.model.path
    path = build_tiny_model(out, params.model.tiny)
    print(f"tiny Qwen2.5-VL written to {path}")
    return 0


def ensure_model(model_params) -> Path:
    """The base policy directory; builds the tiny model first when the params ask for it."""
    from fgrpo_core.models.tiny import build_tiny_model

    path = Path(model_params.path)
    if model_params.build_tiny and not (path / "config.json").is_file():
        print(f"building the tiny model at {path}", file=sys.stderr)
        build_tiny_model(path, model_params.tiny)
    return path


def rollout_demo_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="fgrpo rollout-demo", description="Sample a few synthetic prompts.")
    ap.add_argument("--params", default="params/tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--engine", choices=["vllm", "hf"], default=None)
    args = ap.parse_args(argv)
    from fgrpo_core.config import load_params
    from fgrpo_core.data.synthetic import generate_samples
    from fgrpo_core.prompts import build_messages
    from fgrpo_core.records import PromptInput, SamplingSettings

    params = load_params(args.params, args.overrides)
    path = ensure_model(params.model)
    samples = generate_samples(params.data.synthetic, n=args.prompts, split="demo")
    prompts = [PromptInput(s.id, build_messages(s.question, s.choices), s.image) for s in samples]
    sampling = SamplingSettings(n=params.rollout.group_size, temperature=params.rollout.temperature,
                                top_p=params.rollout.top_p, max_tokens=min(params.rollout.max_tokens, 48),
                                seed=params.seed)
    engine_kind = args.engine or params.rollout.engine
    if engine_kind == "vllm":
        from fgrpo_core.rollout.vllm_engine import VLLMEngine

        engine = VLLMEngine.from_params(path, params.rollout, params.model, params.seed)
    else:
        from fgrpo_core.rollout.hf_engine import HFEngine

        engine = HFEngine.from_pretrained(str(path))
    batch = engine.generate(prompts, sampling)
    by_prompt = batch.by_prompt()
    for s in samples:
        print(f"\n[{s.id}] {s.task}: {s.question} {list(s.choices)} (answer {s.answer})")
        for r in by_prompt[s.id]:
            print(f"  #{r.sample_index} ({len(r.token_ids)} tokens, {r.finish_reason}): {r.text[:120]!r}")
    return 0
