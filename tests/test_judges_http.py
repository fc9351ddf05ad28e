"""The HTTP judge against a real local server (http.server, OpenAI chat-completions shape).

The server answers each call by a scripted plan: well-formed verdicts derived from the request,
timeouts, 5xx/429/4xx, garbage text on a fixed share of calls. What must hold: verdicts map
right, retries are bounded and only on transient errors, failures are counted and score NaN,
concurrency is bounded, and the API key appears in no log, repr, verdict or cache file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
from PIL import Image

from fgrpo_core.config import JudgeEndpoint
from fgrpo_core.judges.base import ConsistencyRequest, SemanticRequest, SentenceLabel, VerdictStatus
from fgrpo_core.judges.cache import CachedJudge, VerdictCache
from fgrpo_core.judges.model import ModelJudge, OpenAIBackend, model_judge_from_endpoint

KEY_ENV = "FGRPO_TEST_JUDGE_KEY"
SECRET = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"


# --------------------------------------------------------------------------------------------
# A scripted OpenAI-compatible server
# --------------------------------------------------------------------------------------------
@dataclass
class Reply:
    """What the server does for one call."""

    status: int = 200
    text: str | None = None  # assistant content; None = derive a well-formed verdict from the request
    delay_s: float = 0.0
    body: str | None = None  # raw body instead of a chat completion


def well_formed(body: dict[str, Any]) -> str:
    """The verdict a careful judge would give on our test requests (markers in the text).

    consistency: the reasoning says "so A"/"so B"; consistent iff that is the final answer.
    semantic: sentences mentioning "red" are CORRECT, "blue" INCORRECT, anything else SKIP.
    """
    user = body["messages"][-1]["content"]
    text = next(p["text"] for p in user if p["type"] == "text")
    if "Sentences (" in text:
        sentences = re.findall(r"^(\d+)\. (.*)$", text.split("Sentences (", 1)[1], flags=re.M)
        label = lambda s: "CORRECT" if "red" in s else "INCORRECT" if "blue" in s else "SKIP"  # noqa: E731
        return "\n".join(f"{n}: {label(s)}" for n, s in sentences)
    concluded = re.search(r"so ([A-D])\b", text).group(1)
    answered = re.search(r"Final answer: ([A-D])", text).group(1)
    return "VERDICT: CONSISTENT" if concluded == answered else "VERDICT: INCONSISTENT"


class ScriptedServer:
    """OpenAI chat-completions on 127.0.0.1; ``plan(call_index, body) -> Reply`` decides each call."""

    def __init__(self, plan: Callable[[int, dict[str, Any]], Reply], require_key: str | None = SECRET):
        self.plan = plan
        self.require_key = require_key
        self.calls: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    index = len(server.calls)
                    server.calls.append(body)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(index, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, index: int, body: dict[str, Any]) -> None:
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    return self._send(401, json.dumps({"error": {"message": "bad key"}}))
                reply = server.plan(index, body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is not None:
                    return self._send(reply.status, reply.body)
                if reply.status != 200:
                    return self._send(reply.status, json.dumps({"error": {"message": f"scripted {reply.status}"}}))
                content = well_formed(body) if reply.text is None else reply.text
                completion = {
                    "id": f"cmpl-{index}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                self._send(200, json.dumps(completion))

            def _send(self, status: int, payload: str) -> None:
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    servers: list[ScriptedServer] = []

    def start(plan: Callable[[int, dict[str, Any]], Reply], **kw: Any) -> ScriptedServer:
        servers.append(ScriptedServer(plan, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def judge_for(server: ScriptedServer, **kw: Any) -> ModelJudge:
    settings = dict(max_concurrency=4, timeout_s=5.0, max_retries=2, retry_backoff_s=0.01, max_tokens=32)
    settings.update(kw)
    return ModelJudge(OpenAIBackend("judge-model", server.base_url, api_key_env=KEY_ENV, **settings))


def consistency_requests(n: int) -> list[ConsistencyRequest]:
    # request i concludes A; its answer is A for even i, B for odd i
    return [
        ConsistencyRequest(f"Q{i}: where is the cube?", ("left", "right"), f"The cube is left, so A.", "AB"[i % 2])
        for i in range(n)
    ]


def image(seed: int) -> Image.Image:
    img = Image.new("RGB", (28, 28), (0, 0, 0))
    img.putpixel((seed % 28, seed // 28 % 28), (255, 0, 0))
    return img


def always(reply: Reply) -> Callable[[int, dict[str, Any]], Reply]:
    return lambda i, body: reply


# --------------------------------------------------------------------------------------------
# Verdicts map right
# --------------------------------------------------------------------------------------------
def test_well_formed_verdicts_map_right(serve):
    server = serve(always(Reply()))
    judge = judge_for(server)
    verdicts = judge.consistency(consistency_requests(6))
    assert [v.status for v in verdicts] == [VerdictStatus.ok] * 6
    assert [v.score for v in verdicts] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]  # answer A consistent, B not
    sem = judge.semantic(
        [
            SemanticRequest("Q?", ("a", "b"), ("A red cube.", "A blue ball.", "Let me look.", "The red one."), image(1)),
            SemanticRequest("Q?", ("a", "b"), ("A blue cube.",), image(2)),
        ]
    )
    C, I, S = SentenceLabel.correct, SentenceLabel.incorrect, SentenceLabel.skip
    assert sem[0].labels == [C, I, S, C] and sem[0].score == pytest.approx(2 / 3)  # 2 correct of 3 non-skip
    assert sem[1].labels == [I] and sem[1].score == 0.0
    assert judge.counters.consistency.ok == 6 and judge.counters.semantic.ok == 2
    assert len(server.calls) == 8
    # what went over the wire: greedy, our model name, the image as a PNG data URL, the key as bearer
    call = server.calls[-1]
    assert call["temperature"] == 0.0 and call["model"] == "judge-model" and call["max_tokens"] == 32
    assert call["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert set(server.auth_headers) == {f"Bearer {SECRET}"}


def test_semantic_without_sentences_asks_nothing_and_is_not_a_score(serve):
    server = serve(always(Reply()))
    judge = judge_for(server)
    (v,) = judge.semantic([SemanticRequest("Q?", (), (), image(0))])
    assert v.status is VerdictStatus.ok and math.isnan(v.score)
    assert server.calls == []


def test_semantic_request_without_image_is_an_error(serve):
    judge = judge_for(serve(always(Reply())))
    with pytest.raises(ValueError, match="#1 has no image"):
        judge.semantic([SemanticRequest("Q?", (), ("A red cube.",), image(0)), SemanticRequest("Q?", (), ("x",), None)])


# --------------------------------------------------------------------------------------------
# Garbage, timeouts, errors: bounded retries, counted failures, never success
# --------------------------------------------------------------------------------------------
def test_garbage_on_a_fixed_share_of_calls_is_unparseable_and_counted(serve):
    # every third call (0, 3, 6, ...) answers in the wrong form: 4 of 12
    server = serve(lambda i, body: Reply(text="Sure! The answer looks CONSISTENT to me.") if i % 3 == 0 else Reply())
    judge = judge_for(server)
    reqs = consistency_requests(12)
    verdicts = judge.consistency(reqs)
    statuses = [v.status for v in verdicts]
    assert statuses.count(VerdictStatus.unparseable) == 4 and statuses.count(VerdictStatus.ok) == 8
    for i, v in enumerate(verdicts):
        if v.status is VerdictStatus.unparseable:
            assert math.isnan(v.score) and "Sure!" in v.raw
        else:
            assert v.score == (1.0 if i % 2 == 0 else 0.0)
    c = judge.counters.consistency
    assert (c.ok, c.unparseable, c.failed) == (8, 4, 0)
    assert len(server.calls) == 12  # unparseable is an answer: not retried


def test_timeouts_are_retried_a_bounded_number_of_times_then_fail(serve):
    server = serve(always(Reply(delay_s=1.5)))
    judge = judge_for(server, timeout_s=0.3, max_retries=2, retry_backoff_s=0.01)
    start = time.monotonic()
    (v,) = judge.consistency(consistency_requests(1))
    elapsed = time.monotonic() - start
    assert v.status is VerdictStatus.failed and math.isnan(v.score)
    assert "Timeout" in v.raw
    assert len(server.calls) == 3  # 1 + max_retries, and no hidden client retries on top
    # 3 attempts x 0.3 s + backoff 0.01 + 0.02 s ~ 0.93 s; waiting the server out would take 4.5 s
    assert elapsed < 3.0
    assert judge.counters.consistency.failed == 1


def test_5xx_then_success_is_ok_after_retries(serve):
    server = serve(lambda i, body: Reply(status=503) if i < 2 else Reply())
    judge = judge_for(server, max_retries=2)
    (v,) = judge.consistency(consistency_requests(1))
    assert v.status is VerdictStatus.ok and v.score == 1.0
    assert len(server.calls) == 3


@pytest.mark.parametrize("status", [500, 502, 429])
def test_persistent_transient_errors_fail_after_bounded_retries(serve, status):
    server = serve(always(Reply(status=status)))
    judge = judge_for(server, max_retries=3)
    verdicts = judge.consistency(consistency_requests(2))
    assert [v.status for v in verdicts] == [VerdictStatus.failed] * 2
    assert all(math.isnan(v.score) for v in verdicts)
    assert len(server.calls) == 2 * 4  # each request: 1 + 3 retries, no more
    assert judge.counters.consistency.failed == 2 and judge.counters.consistency.ok == 0


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(serve, status):
    server = serve(always(Reply(status=status)))
    judge = judge_for(server, max_retries=3)
    (v,) = judge.consistency(consistency_requests(1))
    assert v.status is VerdictStatus.failed
    assert len(server.calls) == 1


def test_a_body_that_is_not_a_chat_completion_fails(serve):
    server = serve(always(Reply(body='{"unexpected": true}')))
    judge = judge_for(server)
    (v,) = judge.semantic([SemanticRequest("Q?", (), ("A red cube.",), image(0))])
    assert v.status is VerdictStatus.failed and math.isnan(v.score)
    assert judge.counters.semantic.failed == 1


def test_empty_answer_is_unparseable_not_success(serve):
    server = serve(always(Reply(text="")))
    (v,) = judge_for(server).consistency(consistency_requests(1))
    assert v.status is VerdictStatus.unparseable and math.isnan(v.score)


def test_mixed_batch_keeps_order_and_counts_each_status(serve):
    # consistency requests carry their index in the question; 1 times out, 2 is garbage, 3 is 400
    def plan(i: int, body: dict[str, Any]) -> Reply:
        q = int(re.search(r"Q(\d+):", body["messages"][1]["content"][0]["text"]).group(1))
        return {1: Reply(delay_s=1.0), 2: Reply(text="maybe"), 3: Reply(status=400)}.get(q, Reply())

    server = serve(plan)
    judge = judge_for(server, timeout_s=0.2, max_retries=1)
    verdicts = judge.consistency(consistency_requests(5))
    assert [v.status.value for v in verdicts] == ["ok", "failed", "unparseable", "failed", "ok"]
    assert [v.score for v in verdicts][::4] == [1.0, 1.0]  # requests 0 and 4 answer A: consistent
    c = judge.counters.consistency
    assert (c.ok, c.unparseable, c.failed) == (2, 1, 2)
    assert len(server.calls) == 6  # 0, 2, 3, 4 once; 1 twice (timeout, then one retry)


# --------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------
def test_concurrency_is_bounded_and_used(serve):
    server = serve(always(Reply(delay_s=0.15)))
    judge = judge_for(server, max_concurrency=3)
    start = time.monotonic()
    verdicts = judge.consistency(consistency_requests(12))
    elapsed = time.monotonic() - start
    assert all(v.status is VerdictStatus.ok for v in verdicts)
    assert server.max_in_flight == 3  # never more than max_concurrency, and it is reached
    assert elapsed < 12 * 0.15  # concurrent: well under the serial time (4 waves x 0.15 s)


def test_works_when_called_from_inside_an_event_loop(serve):
    server = serve(always(Reply()))
    judge = judge_for(server)

    async def caller() -> list[float]:
        return [v.score for v in judge.consistency(consistency_requests(2))]

    assert asyncio.run(caller()) == [1.0, 0.0]


# --------------------------------------------------------------------------------------------
# The key stays secret
# --------------------------------------------------------------------------------------------
def test_missing_key_variable_is_named_in_the_error(monkeypatch):
    monkeypatch.delenv("FGRPO_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="FGRPO_NO_SUCH_KEY is not set"):
        OpenAIBackend("m", "http://127.0.0.1:1/v1", api_key_env="FGRPO_NO_SUCH_KEY")


def test_wrong_key_fails_without_retry(serve, monkeypatch):
    server = serve(always(Reply()))
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    (v,) = judge_for(server, max_retries=3).consistency(consistency_requests(1))
    assert v.status is VerdictStatus.failed and "AuthenticationError" in v.raw
    assert len(server.calls) == 1


def test_key_never_in_logs_reprs_verdicts_or_cache(serve, caplog, tmp_path):
    # The server misbehaves in every way, and echoes the key back in its error bodies.
    echo = json.dumps({"error": {"message": f"invalid request for key {SECRET}"}})

    def plan(i: int, body: dict[str, Any]) -> Reply:
        return [Reply(), Reply(status=500, body=echo), Reply(status=400, body=echo), Reply(text="garbage")][i % 4]

    caplog.set_level(logging.DEBUG)  # every logger, openai's and httpx's included
    server = serve(plan)
    endpoint = JudgeEndpoint(
        model="judge-model", base_url=server.base_url, api_key_env=KEY_ENV, max_retries=1, retry_backoff_s=0.01
    )
    judge = model_judge_from_endpoint(endpoint)
    cache = VerdictCache(tmp_path / "cache")
    cached = CachedJudge(judge, cache)
    verdicts = cached.consistency(consistency_requests(8)) + cached.semantic(
        [SemanticRequest("Q?", (), ("A red cube.",), image(i)) for i in range(4)]
    )
    cache.close()
    statuses = {v.status for v in verdicts}
    assert VerdictStatus.failed in statuses and VerdictStatus.ok in statuses  # the errors were hit
    assert VerdictStatus.unparseable in statuses
    assert set(server.auth_headers) == {f"Bearer {SECRET}"}  # the key was really sent, every time

    assert all(SECRET not in v.raw for v in verdicts)  # the echoed key is scrubbed from error texts
    assert "***" in " ".join(v.raw for v in verdicts)  # ... and it was there to scrub
    assert SECRET not in caplog.text
    assert caplog.records, "the judge logged nothing: the log check above proves nothing"
    for obj in (judge, judge.backend, cached, cache, endpoint):
        assert SECRET not in repr(obj) and SECRET not in str(obj)
    assert SECRET not in json.dumps(vars(judge.backend), default=str)  # not stored on the backend
    stored = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    assert len(stored) > 0 and SECRET.encode() not in stored
