"""``fgrpo judge-agreement``: the model judge against the exact scene-graph verifier.

    fgrpo judge-agreement --params FILE [--set key=value ...] [--limit N] [--out FILE.json]

The set is the synthetic validation split with a chain-of-thought trace per sample, written
from the scene graph with the fault shares of ``data.synthetic`` (inconsistent conclusions,
hallucinated sentences, misplaced boxes), so both labels of each signal occur. The val split is
staged without traces, so the samples are generated here with the same seed, split and index
(same scenes, same questions); when ``data/staged/val`` exists, its synthetic samples are checked
to be the same ones. The exact verifier is the reference; the report gives the model judge's
accuracy and Cohen's kappa per signal, and its unparseable/failed counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from fgrpo_core.config import Params, ParamsError, load_params
from fgrpo_core.data.schema import Sample


def agreement_samples(params: Params, limit: int | None) -> list[Sample]:
    """The synthetic val samples, each with a trace (see the module docstring)."""
    from fgrpo_core.data.synthetic import generate_item

    n = params.data.synthetic.n_val if limit is None else min(limit, params.data.synthetic.n_val)
    return [
        generate_item(
            params.data.synthetic, "val", i, params.model.min_pixels, params.model.max_pixels, with_trace=True
        ).sample
        for i in range(n)
    ]


def check_against_staged(samples: list[Sample], staged_dir: Path) -> None:
    """Fail, naming the sample, if the staged val split holds other synthetic samples."""
    import datasets

    ds = datasets.load_from_disk(str(staged_dir))
    staged = {}
    for row in ds.select_columns(["id", "source", "question", "choices", "answer"]):
        if row["source"] == "synthetic":
            staged[row["id"]] = row
    for s in samples:
        row = staged.get(s.id)
        if row is None:
            continue
        if (row["question"], list(row["choices"]), row["answer"]) != (s.question, s.choices, s.answer):
            raise ParamsError(
                f"{staged_dir}: sample {s.id} differs from the one these params generate "
                f"(staged question {row['question']!r}, generated {s.question!r}); re-run `fgrpo stage-data`"
            )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgrpo judge-agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", required=True, help="params YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    p.add_argument("--limit", type=int, default=None, help="use at most N val samples")
    p.add_argument("--out", default="metrics/judge_agreement.json", help="where the JSON report is written")
    return p


def agreement_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        params = load_params(args.params, args.set)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2
    endpoint = params.judges.model_judge
    if endpoint is None:
        print("fgrpo judge-agreement: judges.model_judge is not set: there is no model judge to compare",
              file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"fgrpo judge-agreement: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    from flows.judge_keys import export_judge_key

    try:
        export_judge_key(endpoint)  # from a Prefect Secret block, if the params name one
    except ParamsError as err:
        print(f"fgrpo judge-agreement: {err}", file=sys.stderr)
        return 2

    from fgrpo_core.judges.agreement import compare_judges, trace_requests
    from fgrpo_core.judges.cache import CachedJudge, VerdictCache
    from fgrpo_core.judges.exact import ExactJudge
    from fgrpo_core.judges.model import model_judge_from_endpoint

    samples = agreement_samples(params, args.limit)
    staged = Path(params.data.out_dir) / "val"
    if staged.is_dir():
        try:
            check_against_staged(samples, staged)
        except ParamsError as err:
            print(err, file=sys.stderr)
            return 2
    c_reqs, s_reqs = [], []
    for s in samples:
        c, sem = trace_requests(s.question, s.choices, s.trace, s.image, s.scene)
        c_reqs += [c] if c is not None else []
        s_reqs += [sem] if sem is not None else []

    llm = None
    if endpoint.backend == "vllm":
        from fgrpo_core.rollout.vllm_engine import VLLMEngine

        llm = VLLMEngine.from_params(endpoint.model, params.rollout, params.model, params.seed).llm
    model = model_judge_from_endpoint(endpoint, llm)
    cache = VerdictCache(params.judges.cache_dir)
    try:
        report = compare_judges(ExactJudge(), CachedJudge(model, cache), c_reqs, s_reqs)
    finally:
        cache.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json() + "\n")
    print(f"{len(samples)} synthetic val samples, {len(c_reqs)} consistency and {len(s_reqs)} semantic requests")
    print(report.to_markdown())
    print(f"report written to {out}")
    return 0
