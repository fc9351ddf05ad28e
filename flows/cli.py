"""The ``fgrpo`` command line: one sub-command per pipeline step.

Each sub-command lives in its own module and is imported only when it runs, so ``fgrpo --help``
stays fast and a broken optional stack (e.g. vLLM) never blocks the others. Every handler takes
the remaining argv and returns an exit code. ``dvc.yaml`` stages and the Prefect tasks call the
same functions these handlers call.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "build-tiny-model": ("flows.cmd_model:build_tiny_main", "build the tiny Qwen2.5-VL locally"),
    "rollout-demo": ("flows.cmd_model:rollout_demo_main", "sample a few synthetic prompts"),
    "stage-data": ("flows.cmd_data:main", "build/import the datasets the params ask for"),
    "sft": ("flows.cmd_sft:main", "SFT warm start with TRL"),
    "train": ("flows.cmd_train:main", "run FGRPO rounds from the SFT checkpoint"),
    "evaluate": ("flows.cmd_eval:main", "greedy pass@1 on every test split"),
    "compare": ("flows.cmd_eval:compare_main", "one table across runs"),
    "eval-gate": ("flows.cmd_eval:gate_main", "fail (exit 1) when metrics regress beyond tolerances"),
    "judge-agreement": ("flows.cmd_judges:agreement_main", "model judges vs the exact verifier"),
    "pipeline": ("flows.cmd_pipeline:main", "run the whole Prefect flow locally"),
    "prefect": ("flows.cmd_prefect:main", "up|down|status: local Prefect server, pool, limit, deployments, worker"),
    "repro": ("flows.cmd_repro:main", "the paper's ablation table at toy scale, one SFT checkpoint"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    rows = "\n".join(f"  {n.ljust(width)}  {h}" for n, (_, h) in COMMANDS.items())
    return f"usage: fgrpo COMMAND [args]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fgrpo: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        print(f"fgrpo {name}: not available ({err})", file=sys.stderr)
        return 2
    return int(handler(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
