"""``fgrpo stage-data``: build/import every dataset the params ask for.

    fgrpo stage-data --params FILE [--set key=value ...]

Writes ``data.out_dir/<split>`` (datasets ``save_to_disk``) and ``manifest.json`` beside them,
atomically (see ``fgrpo_core.data.stage``). Prompts over ``data.max_prompt_tokens`` are dropped,
counted exactly with the policy's processor when ``model.path`` is a model folder on disk (local
files only, ``model.trust_remote_code`` as set), else by the byte upper bound; the manifest's
``prompt_length`` says which. Exit codes: 0 done, 2 bad params or bad input data (the message
names the file, row and field).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from fgrpo_core.config import ParamsError, load_params
from fgrpo_core.data.stage import prompt_counter  # noqa: F401  (re-exported)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgrpo stage-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", required=True, help="params YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv or []))
    try:
        params = load_params(args.params, args.set)
    except ParamsError as err:
        print(err, file=sys.stderr)
        return 2

    import datasets

    from fgrpo_core.data.schema import SchemaError
    from fgrpo_core.data.stage import stage_data

    datasets.disable_progress_bars()  # one summary below instead of a bar per split

    try:
        count, counted_by = prompt_counter(params.model)
        manifest = stage_data(params.data, params.model.min_pixels, params.model.max_pixels, params.data.out_dir,
                              prompt_tokens=count, prompt_length=counted_by)
    except (SchemaError, ValueError) as err:
        print(f"fgrpo stage-data: {err}", file=sys.stderr)
        return 2
    print(f"staged {params.data.out_dir} (content hash {manifest['content_hash'][:16]})")
    print(f"  prompt length: {manifest['prompt_length']}")
    for name, rep in manifest["splits"].items():
        faults = f", faults {rep['faults']}" if rep["faults"] else ""
        print(f"  {name:<18} {rep['count']:>6} samples{faults}")
        if rep["dropped_overlong"]:
            print(f"  {'':<18} {rep['dropped_overlong']:>6} dropped: prompt over "
                  f"{manifest['max_prompt_tokens']} tokens (raise data.max_prompt_tokens or lower "
                  "model.max_pixels)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
