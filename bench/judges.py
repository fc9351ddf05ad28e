"""Benchmark: model-judge cost, cold vs cached, and HTTP throughput by concurrency.

    python bench/judges.py [--rollouts 64] [--requests 64] [--max-tokens 32] [--eager]
                           [--model-dir DIR] [--out FILE.json]

Against a local ``vllm serve`` of the tiny Qwen2.5-VL on 127.0.0.1 (built if ``--model-dir``
does not hold it), through the real HTTP judge (``OpenAIBackend`` + ``ModelJudge``):

1. **Re-scoring a round from the cache.** A round of ``--rollouts`` completions (synthetic val
   samples with their chain-of-thought traces) is scored for R_C and R_S: cold (empty cache,
   every request goes to the server) and again from the cache (a new judge and a reopened
   cache, as the next run would do). Goal: cached time <= 5% of cold time, with zero calls.
2. **Throughput.** ``--requests`` distinct consistency requests at 1, 4 and 16 requests in
   flight: requests/s and mean latency per request. The server runs ``--max-num-seqs 16``.

The tiny model answers garbage (every verdict unparseable); its generation length is pinned by
``--max-tokens``, so the timings measure the judge machinery and the engine, not a model's
verbosity. The machine is shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fgrpo_core.config import SyntheticDataParams, TinyModelParams  # noqa: E402
from fgrpo_core.data.synthetic import generate_item  # noqa: E402
from fgrpo_core.judges.agreement import trace_requests  # noqa: E402
from fgrpo_core.judges.base import ConsistencyRequest, SemanticRequest  # noqa: E402
from fgrpo_core.judges.cache import CachedJudge, VerdictCache  # noqa: E402
from fgrpo_core.judges.model import ModelJudge, OpenAIBackend  # noqa: E402
from fgrpo_core.judges.vllm_server import VLLMServer  # noqa: E402

SERVED = "tiny-judge"


@dataclass
class CacheResult:
    rollouts: int
    consistency_requests: int
    semantic_requests: int
    cold_s: float
    cached_s: float
    cached_share: float  # cached_s / cold_s
    cold_backend_calls: int
    cached_backend_calls: int


@dataclass
class ThroughputResult:
    concurrency: int
    requests: int
    wall_s: float
    requests_per_s: float
    mean_latency_s: float  # wall_s * concurrency / requests (every slot busy)


def round_requests(n: int) -> tuple[list[ConsistencyRequest], list[SemanticRequest]]:
    """One round: ``n`` synthetic val samples with traces -> the judge requests scoring makes."""
    params = SyntheticDataParams()
    c_reqs, s_reqs = [], []
    for i in range(n):
        s = generate_item(params, "val", i, 28 * 28 * 4, 28 * 28 * 1280, with_trace=True).sample
        c, sem = trace_requests(s.question, s.choices, s.trace, s.image, s.scene)
        c_reqs += [c] if c else []
        s_reqs += [sem] if sem else []
    return c_reqs, s_reqs


def backend(base_url: str, concurrency: int, max_tokens: int) -> OpenAIBackend:
    return OpenAIBackend(SERVED, base_url, max_concurrency=concurrency, timeout_s=300, max_tokens=max_tokens)


def bench_cache(base_url: str, rollouts: int, max_tokens: int, cache_dir: Path) -> CacheResult:
    c_reqs, s_reqs = round_requests(rollouts)

    def score() -> tuple[float, ModelJudge]:
        judge = ModelJudge(backend(base_url, 16, max_tokens))
        cache = VerdictCache(cache_dir)
        cached = CachedJudge(judge, cache)
        t0 = time.perf_counter()
        cached.consistency(c_reqs)
        cached.semantic(s_reqs)
        elapsed = time.perf_counter() - t0
        cache.close()
        return elapsed, judge

    cold_s, cold_judge = score()
    cached_s, cached_judge = score()
    calls = lambda j: j.counters.consistency.total + j.counters.semantic.total  # noqa: E731
    return CacheResult(
        rollouts, len(c_reqs), len(s_reqs), cold_s, cached_s, cached_s / cold_s, calls(cold_judge), calls(cached_judge)
    )


def bench_throughput(base_url: str, n: int, concurrency: int, max_tokens: int) -> ThroughputResult:
    c_reqs, _ = round_requests(n)
    # distinct prompts, so the server's prefix cache helps every level alike
    reqs = [ConsistencyRequest(f"[{concurrency}] {r.question}", r.choices, r.reasoning, r.answer) for r in c_reqs]
    judge = ModelJudge(backend(base_url, concurrency, max_tokens))
    t0 = time.perf_counter()
    verdicts = judge.consistency(reqs)
    wall = time.perf_counter() - t0
    failed = judge.counters.consistency.failed
    if failed:
        raise RuntimeError(f"{failed} of {len(verdicts)} requests failed at concurrency {concurrency}")
    return ThroughputResult(concurrency, len(reqs), wall, len(reqs) / wall, wall * concurrency / len(reqs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=64)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--eager", action="store_true", help="serve without torch.compile")
    p.add_argument("--model-dir", default=None, help="tiny model directory (built if missing)")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-judges-"))
    model_dir = Path(args.model_dir) if args.model_dir else work / "tiny-qwen2.5-vl"
    if not (model_dir / "config.json").exists():
        from fgrpo_core.models.tiny import build_tiny_model

        build_tiny_model(model_dir, TinyModelParams())
    t0 = time.perf_counter()
    with VLLMServer(model_dir, work / "serve.log", served_name=SERVED, enforce_eager=args.eager) as server:
        start_s = time.perf_counter() - t0
        print(f"vllm serve up in {start_s:.1f} s at {server.base_url} (log {server.log_path})")
        ModelJudge(backend(server.base_url, 1, args.max_tokens)).consistency(round_requests(1)[0])  # warm-up
        cache = bench_cache(server.base_url, args.rollouts, args.max_tokens, work / "cache")
        load_after_cache = os.getloadavg()[0]
        throughput = [bench_throughput(server.base_url, args.requests, c, args.max_tokens) for c in (1, 4, 16)]
        load_after_throughput = os.getloadavg()[0]

    print(f"\n## Re-scoring a round of {cache.rollouts} rollouts "
          f"({cache.consistency_requests} consistency + {cache.semantic_requests} semantic requests)")
    print("| pass | time (s) | backend calls |\n|---|---|---|")
    print(f"| cold | {cache.cold_s:.3f} | {cache.cold_backend_calls} |")
    print(f"| cached | {cache.cached_s:.4f} | {cache.cached_backend_calls} |")
    goal = "met" if cache.cached_share <= 0.05 and cache.cached_backend_calls == 0 else "NOT met"
    print(f"cached / cold = {100 * cache.cached_share:.2f}% (goal <= 5%: {goal}); load avg {load_after_cache:.2f}")
    print(f"\n## HTTP judge throughput ({args.requests} consistency requests, max_tokens {args.max_tokens})")
    print("| concurrency | wall (s) | requests/s | mean latency (s) |\n|---|---|---|---|")
    for t in throughput:
        print(f"| {t.concurrency} | {t.wall_s:.2f} | {t.requests_per_s:.2f} | {t.mean_latency_s:.3f} |")
    print(f"load avg {load_after_throughput:.2f} on {os.cpu_count()} CPUs")

    if args.out is None:
        return 0 if goal == "met" else 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "server_start_s": start_s,
                "eager": args.eager,
                "max_tokens": args.max_tokens,
                "cache": asdict(cache),
                "throughput": [asdict(t) for t in throughput],
                "load_avg": [load_after_cache, load_after_throughput],
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {out}")
    return 0 if goal == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
