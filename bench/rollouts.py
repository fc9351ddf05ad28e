"""Rollout throughput: raw vLLM vs our vLLM engine vs transformers generate, at two sizes.

    .venv/bin/python bench/rollouts.py [--prompts 16] [--n 4] [--max-tokens 64] [--sizes tiny,medium]

The same workload (prompts with one image each x n samples x max tokens, temperature 1, seeded)
runs through
  raw     vllm.LLM.generate on pre-rendered prompts (the peer),
  ours    VLLMEngine.generate (chat templating + typed records on top of the same LLM),
  hf      transformers generate (HFEngine),
and prints generated tokens/s and the ratios. It also times an in-place weight refresh against a
full engine restart. Each size runs in its own process so engines never share memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {
    # the default tiny preset
    "tiny": {},
    # ~60M parameters, built the same way
    "medium": dict(hidden_size=768, num_hidden_layers=8, num_attention_heads=12, num_key_value_heads=4,
                   intermediate_size=2048, vision_hidden_size=256, vision_depth=4, vision_num_heads=4,
                   vision_intermediate_size=1024),
}


def _prompts(k: int):
    from PIL import Image

    from fgrpo_core.prompts import build_messages
    from fgrpo_core.records import PromptInput

    return [
        PromptInput(f"p{i}", build_messages(f"Question {i}: which object is closer to the camera?",
                                            ["the red circle", "the blue square", "the green triangle"]),
                    Image.new("RGB", (112, 112), ((37 * i) % 255, (91 * i) % 255, 120)))
        for i in range(k)
    ]


def _run_size(size: str, k: int, n: int, max_tokens: int, repeats: int) -> dict:
    import torch
    from vllm import SamplingParams

    from fgrpo_core.config import TinyModelParams
    from fgrpo_core.models.tiny import build_tiny_model
    from fgrpo_core.records import SamplingSettings
    from fgrpo_core.rollout.base import prompt_seed
    from fgrpo_core.rollout.hf_engine import HFEngine
    from fgrpo_core.rollout.vllm_engine import VLLMEngine

    out: dict = {"size": size}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(Path(tmp) / size, TinyModelParams(**SIZES[size]))
        prompts = _prompts(k)
        sampling = SamplingSettings(n=n, temperature=1.0, max_tokens=max_tokens, seed=0)

        t0 = time.perf_counter()
        engine = VLLMEngine(path, dtype="float32", max_model_len=2048, seed=0)
        out["engine_start_s"] = time.perf_counter() - t0
        hf = HFEngine.from_pretrained(str(path))
        out["params_M"] = sum(p.numel() for p in hf.model.parameters()) / 1e6

        requests = [engine._request(p) for p in prompts]
        raw_params = [SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, logprobs=0,
                                     seed=prompt_seed(0, p.prompt_id)) for p in prompts]
        engine.generate(prompts[:2], sampling)  # warm-up

        def raw():
            res = engine.llm.generate(requests, raw_params, use_tqdm=False)
            return sum(len(c.token_ids) for r in res for c in r.outputs)

        def ours():
            return sum(len(r.token_ids) for r in engine.generate(prompts, sampling).rollouts)

        def hf_gen():
            return sum(len(r.token_ids) for r in hf.generate(prompts, sampling).rollouts)

        # Interleave raw and ours so drift on a shared machine hits both alike.
        for name, fn in (("raw", raw), ("ours", ours), ("raw", raw), ("ours", ours), ("hf", hf_gen)):
            for _ in range(repeats):
                t = time.perf_counter()
                toks = fn()
                dt = time.perf_counter() - t
                out.setdefault(name, []).append(toks / dt)

        state = [(nme, p.detach().clone()) for nme, p in hf.model.state_dict().items()]
        t = time.perf_counter()
        for _ in range(3):
            engine.update_weights(state)
        out["refresh_s"] = (time.perf_counter() - t) / 3
        engine.close()
        del engine
        t = time.perf_counter()
        engine2 = VLLMEngine(path, dtype="float32", max_model_len=2048, seed=0)
        out["restart_s"] = time.perf_counter() - t
        engine2.close()
        del torch
    for key in ("raw", "ours", "hf"):
        vals = sorted(out[key])
        out[key] = vals[len(vals) // 2]  # median tokens/s
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,medium")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--_one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        print("RESULT " + json.dumps(_run_size(args._one, args.prompts, args.n, args.max_tokens, args.repeats)))
        return
    rows = []
    for size in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--_one", size, "--prompts", str(args.prompts), "--n", str(args.n),
               "--max-tokens", str(args.max_tokens), "--repeats", str(args.repeats)]
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"size {size} failed")
        rows.append(json.loads(line[0][7:]))
    print(f"\nworkload: {args.prompts} prompts x n={args.n} x {args.max_tokens} max tokens, images 112x112, "
          f"temperature 1 (tokens/s = generated tokens per wall second, median)\n")
    print(f"{'size':8} {'params':>8} {'raw vLLM':>10} {'ours':>10} {'hf gen':>10} {'ours/raw':>9} "
          f"{'hf/raw':>7} {'refresh':>9} {'restart':>9} {'restart/refresh':>16}")
    for r in rows:
        print(f"{r['size']:8} {r['params_M']:7.1f}M {r['raw']:10.0f} {r['ours']:10.0f} {r['hf']:10.0f} "
              f"{r['ours'] / r['raw']:9.3f} {r['hf'] / r['raw']:7.2f} {r['refresh_s'] * 1e3:7.1f}ms "
              f"{r['restart_s']:8.1f}s {r['restart_s'] / r['refresh_s']:15.0f}x")
    print("\ngoal: ours/raw >= 0.90 (wrapper overhead <= 10%)")


if __name__ == "__main__":
    main()
