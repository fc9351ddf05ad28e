"""A judge endpoint's key from a Prefect Secret block, exported into the environment.

``fgrpo_core`` reads a judge's key from the environment variable that
``judges.model_judge.api_key_env`` names, at request time, and never stores it. When the params
also name ``judges.model_judge.api_key_block``, the flows and the CLI commands that build judges
call :func:`export_judge_key` first: it loads that Secret block from the Prefect API and sets the
variable in this process (and so in the stage commands it starts). The key is never logged,
returned or written to a file; only the block's and the variable's names appear in messages.
"""

from __future__ import annotations

import os
from typing import Callable

from fgrpo_core.config import JudgeEndpoint, JudgeParams, ParamsError

FIELD = "judges.model_judge.api_key_block"


def endpoint_in_use(judges: JudgeParams) -> JudgeEndpoint | None:
    """The model judge's endpoint when consistency or semantic scoring uses it, else None."""
    return judges.model_judge if "model" in (judges.consistency, judges.semantic) else None


def export_judge_key(endpoint: JudgeEndpoint | None, log: Callable[[str], None] = print) -> bool:
    """Set ``os.environ[endpoint.api_key_env]`` from the Prefect Secret block ``endpoint.api_key_block``.

    The environment wins: when the variable is already set (non-empty), the block is not read
    and the variable is left as it is. Nothing happens without an endpoint or a block. Returns
    True when the key was exported from the block.

    A block that does not exist, cannot be read (no Prefect API) or holds no non-empty string is
    an error naming the block and the params field.
    """
    if endpoint is None or endpoint.api_key_block is None:
        return False
    block, var = endpoint.api_key_block, endpoint.api_key_env
    assert var is not None  # JudgeEndpoint validation: a block needs a variable
    if os.environ.get(var):
        log(f"judge key: ${var} is set; the Prefect Secret block {block!r} ({FIELD}) is not read")
        return False
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except Exception as err:
        # Only Prefect's own "not found" text is repeated: other errors (a pydantic one, say)
        # may quote the block's data. ``from None``: no chained traceback either.
        if isinstance(err, ValueError) and "Unable to find block document" in str(err):
            raise ParamsError(f"{FIELD}: no Prefect Secret block named {block!r} on the Prefect API; "
                              f"create it (prefect.blocks.system.Secret(value=...).save({block!r})) "
                              f"or set ${var}") from None
        raise ParamsError(f"{FIELD}: could not read the Prefect Secret block {block!r} "
                          f"({type(err).__name__}; is PREFECT_API_URL right?) and ${var} is not set") from None
    if not isinstance(value, str) or not value:
        raise ParamsError(f"{FIELD}: the Prefect Secret block {block!r} must hold a non-empty string key, "
                          f"it holds a {type(value).__name__}{' (empty)' if isinstance(value, str) else ''}")
    os.environ[var] = value
    log(f"judge key: ${var} set from the Prefect Secret block {block!r}")
    return True
