"""Model judges: the project's judge prompts over a pluggable chat backend.

A backend turns a batch of chat prompts into one :class:`Completion` each: text when the model
answered, ``None`` plus the reason when it did not. :class:`ModelJudge` parses the text strictly
(``prompts.py``), so every verdict is ``ok``, ``unparseable`` (answered, wrong form) or
``failed`` (no answer); the last two score NaN and are counted, never turned into success.

Back ends:

- :class:`OpenAIBackend`: any OpenAI-compatible endpoint (``vllm serve``, a hosted model) via
  ``openai.AsyncOpenAI``. At most ``max_concurrency`` requests in flight, a hard per-request
  timeout, and the ONLY retry layer: exponential backoff on transient errors (timeouts,
  connection errors, 429, 5xx); the client's own retries are off (``max_retries=0``) so the two
  never multiply (docs/method.md#judges-at-scale). The API key is read from the environment
  variable *named* in the params at call time; it is kept on no object and scrubbed from every
  error text.
- :class:`VLLMBackend`: a ``vllm.LLM`` the caller built and keeps alive; one batched, greedy
  ``llm.chat`` call per batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Coroutine, Protocol, Sequence, TypeVar

import openai

from fgrpo_core.config import JudgeEndpoint
from fgrpo_core.judges.base import (
    ConsistencyRequest,
    ConsistencyVerdict,
    SemanticRequest,
    SemanticVerdict,
    VerdictStatus,
)
from fgrpo_core.judges.prompts import (
    PROMPT_VERSION,
    ChatMessages,
    consistency_messages,
    parse_consistency,
    parse_semantic,
    semantic_messages,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Completion:
    """One backend answer: ``text`` when the model answered, else ``None`` and ``error``."""

    text: str | None
    error: str = ""
    attempts: int = 1  # requests sent for this prompt (1 + retries)


class ChatBackend(Protocol):
    """Greedy chat completion of a batch of prompts, one :class:`Completion` per prompt, in order."""

    model: str

    def complete(self, prompts: Sequence[ChatMessages]) -> list[Completion]: ...


# --------------------------------------------------------------------------------------------
# Status counters
# --------------------------------------------------------------------------------------------
@dataclass
class StatusCounts:
    """How many verdicts of one signal came back in each status."""

    ok: int = 0
    unparseable: int = 0
    failed: int = 0

    def add(self, status: VerdictStatus) -> None:
        setattr(self, status.value, getattr(self, status.value) + 1)

    @property
    def total(self) -> int:
        return self.ok + self.unparseable + self.failed


@dataclass
class JudgeCounters:
    """Per-signal status counts of everything a judge returned since it was built."""

    consistency: StatusCounts = field(default_factory=StatusCounts)
    semantic: StatusCounts = field(default_factory=StatusCounts)


# --------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------
class ModelJudge:
    """A :class:`~fgrpo_core.judges.base.Judge` that asks a chat model (any backend)."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend
        # name and version enter the cache key: a new model or a new prompt never hits old verdicts
        self.name = f"model:{backend.model}"
        self.version = PROMPT_VERSION
        self.counters = JudgeCounters()

    def __repr__(self) -> str:
        return f"ModelJudge(backend={self.backend!r}, version={self.version!r})"

    def consistency(self, requests: Sequence[ConsistencyRequest]) -> list[ConsistencyVerdict]:
        completions = self.backend.complete([consistency_messages(r) for r in requests])
        _check_length(completions, requests)
        verdicts = [
            parse_consistency(c.text)
            if c.text is not None
            else ConsistencyVerdict(VerdictStatus.failed, None, c.error)
            for c in completions
        ]
        for v in verdicts:
            self.counters.consistency.add(v.status)
        return verdicts

    def semantic(self, requests: Sequence[SemanticRequest]) -> list[SemanticVerdict]:
        # A rollout without checkable sentences needs no call: R_S is "not applicable" (NaN).
        verdicts = [SemanticVerdict(VerdictStatus.ok, [], "") for _ in requests]
        asked = [i for i, r in enumerate(requests) if r.sentences]
        for i in asked:
            if requests[i].image is None:
                raise ValueError(f"semantic request #{i} has no image: a vision judge needs one")
        completions = self.backend.complete([semantic_messages(requests[i]) for i in asked])
        _check_length(completions, asked)
        for i, c in zip(asked, completions):
            verdicts[i] = (
                parse_semantic(c.text, len(requests[i].sentences))
                if c.text is not None
                else SemanticVerdict(VerdictStatus.failed, [], c.error)
            )
        for v in verdicts:
            self.counters.semantic.add(v.status)
        return verdicts


def _check_length(completions: Sequence[Completion], asked: Sequence[Any]) -> None:
    if len(completions) != len(asked):
        raise RuntimeError(f"judge backend returned {len(completions)} completions for {len(asked)} prompts")


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# --------------------------------------------------------------------------------------------
def _is_transient(err: BaseException) -> bool:
    """Worth retrying: timeouts, dropped connections, rate limits, server errors."""
    if isinstance(err, (asyncio.TimeoutError, openai.APIConnectionError)):  # APITimeoutError too
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    t = threading.Thread(target=target, name="judge-http")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class OpenAIBackend:
    """Chat completions over an OpenAI-compatible endpoint, bounded, timed out, retried once-layered."""

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        retry_backoff_s: float = 0.5,
        max_tokens: int = 256,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env  # the variable's NAME; the key itself is never stored
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_tokens = max_tokens
        self._api_key()  # fail now, naming the variable, if it is not set

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})"
        )

    def _api_key(self) -> str:
        if self.api_key_env is None:
            return "EMPTY"  # local servers (vllm serve without --api-key) accept any key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"judge endpoint: environment variable {self.api_key_env} is not set or empty")
        return key

    def complete(self, prompts: Sequence[ChatMessages]) -> list[Completion]:
        if not prompts:
            return []
        return _run_coroutine(self._complete_all(list(prompts), self._api_key()))

    async def _complete_all(self, prompts: list[ChatMessages], key: str) -> list[Completion]:
        # One client per batch: its connection pool belongs to this event loop.
        client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        async with client:
            slots = asyncio.Semaphore(self.max_concurrency)
            return list(await asyncio.gather(*(self._one(client, slots, p, key) for p in prompts)))

    async def _one(
        self, client: openai.AsyncOpenAI, slots: asyncio.Semaphore, messages: ChatMessages, key: str
    ) -> Completion:
        error = ""
        attempts = 0
        for attempt in range(self.max_retries + 1):
            attempts += 1
            async with slots:  # the slot is held for the request only, not for the backoff
                try:
                    response = await asyncio.wait_for(
                        client.chat.completions.create(
                            model=self.model,
                            messages=messages,  # type: ignore[arg-type]
                            max_tokens=self.max_tokens,
                            temperature=0.0,
                        ),
                        timeout=self.timeout_s,  # hard bound: httpx's read timeout is per chunk
                    )
                except Exception as err:  # classified below; never swallowed as success
                    detail = str(err) or f"no answer within {self.timeout_s} s"
                    error = _redact(f"{type(err).__name__}: {detail}", key)
                    if not _is_transient(err):
                        log.warning("judge request failed, not retried: %s", error)
                        return Completion(None, error, attempts)
                    log.info("judge request attempt %d/%d failed: %s", attempts, self.max_retries + 1, error)
                else:
                    return _completion_from(response, attempts, key)
            if attempt < self.max_retries:
                await asyncio.sleep(self.retry_backoff_s * 2**attempt)
        log.warning("judge request failed after %d attempts: %s", attempts, error)
        return Completion(None, error, attempts)


def _completion_from(response: Any, attempts: int, key: str) -> Completion:
    """The answer text; a body that is not a chat completion is a failure, not an answer."""
    try:
        text = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError) as err:
        return Completion(None, _redact(f"malformed chat completion: {err}", key), attempts)
    # An empty/None content is an answer in the wrong form: the parser makes it unparseable.
    return Completion(text if isinstance(text, str) else "", "", attempts)


# --------------------------------------------------------------------------------------------
# vLLM offline backend
# --------------------------------------------------------------------------------------------
class VLLMBackend:
    """Greedy batched ``llm.chat`` on a ``vllm.LLM`` the caller owns (kept alive across rounds)."""

    def __init__(self, llm: Any, model: str, max_tokens: int = 256):
        self.llm = llm
        self.model = model
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r}, max_tokens={self.max_tokens})"

    def complete(self, prompts: Sequence[ChatMessages]) -> list[Completion]:
        if not prompts:
            return []
        from vllm import SamplingParams  # the GPU/CPU engine is imported only when used

        greedy = SamplingParams(temperature=0.0, max_tokens=self.max_tokens)
        try:
            outputs = self.llm.chat(list(prompts), greedy, use_tqdm=False)
        except Exception as err:  # e.g. one prompt over max_model_len rejects the whole batch
            log.warning("judge batch failed (%s: %s); retrying prompt by prompt", type(err).__name__, err)
            return [self._complete_one(p) for p in prompts]
        return [Completion(o.outputs[0].text) for o in outputs]

    def _complete_one(self, prompt: ChatMessages) -> Completion:
        from vllm import SamplingParams

        try:
            (out,) = self.llm.chat([prompt], SamplingParams(temperature=0.0, max_tokens=self.max_tokens), use_tqdm=False)
        except Exception as err:
            return Completion(None, f"{type(err).__name__}: {err}")
        return Completion(out.outputs[0].text)


# --------------------------------------------------------------------------------------------
# From params
# --------------------------------------------------------------------------------------------
def model_judge_from_endpoint(endpoint: JudgeEndpoint, llm: Any = None) -> ModelJudge:
    """The judge an endpoint section describes; ``llm`` is required for ``backend: vllm``."""
    if endpoint.backend == "openai":
        return ModelJudge(
            OpenAIBackend(
                model=endpoint.model,
                base_url=endpoint.base_url,
                api_key_env=endpoint.api_key_env,
                max_concurrency=endpoint.max_concurrency,
                timeout_s=endpoint.timeout_s,
                max_retries=endpoint.max_retries,
                retry_backoff_s=endpoint.retry_backoff_s,
                max_tokens=endpoint.max_tokens,
            )
        )
    if llm is None:
        raise ValueError("judges.model_judge.backend is 'vllm': pass the vllm.LLM that serves it")
    return ModelJudge(VLLMBackend(llm, endpoint.model, endpoint.max_tokens))

