"""Model judges on real engines: a `vllm serve` of the tiny model (HTTP) and the session's vLLM LLM.

A tiny random model answers garbage. Every such answer must come out ``unparseable``, be counted,
score NaN and stay out of the constraint means; never a success. One server per test session.
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from fgrpo_core.judges.base import ConsistencyRequest, SemanticRequest, VerdictStatus
from fgrpo_core.judges.cache import CachedJudge, VerdictCache
from fgrpo_core.judges.model import ModelJudge, OpenAIBackend, VLLMBackend
from fgrpo_core.judges.prompts import consistency_messages
from fgrpo_core.judges.vllm_server import VLLMServer
from fgrpo_core.lagrangian import constraint_stats

pytestmark = pytest.mark.engine


@pytest.fixture(scope="session")
def judge_server(tiny_model_dir, tmp_path_factory):
    """ONE `vllm serve` of the tiny model on 127.0.0.1 (random free port) for the session."""
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # eager: no torch.compile at start-up (~40 s saved on 2 cores); the tiny judge's speed is moot
    server = VLLMServer(tiny_model_dir, log, served_name="tiny-judge", max_model_len=2048, enforce_eager=True)
    server.start()
    yield server
    server.stop()
    assert server.process is not None and server.process.poll() is not None, "vllm serve still running"


def _image(seed: int) -> Image.Image:
    img = Image.new("RGB", (112, 112), (240, 240, 240))
    for x in range(20 + seed, 50 + seed):
        for y in range(30, 60):
            img.putpixel((x, y), (220, 30, 30))
    return img


CONSISTENCY = [
    ConsistencyRequest("Is the red cube left of the ball?", ("yes", "no"), "The red cube is left of the ball, so A.", "A"),
    ConsistencyRequest("Is the red cube left of the ball?", ("yes", "no"), "The cube is right of the ball, so B.", "A"),
    ConsistencyRequest("How many circles are there?", ("1", "2", "3"), "I count two circles. So B.", "B"),
]
SEMANTIC = [
    SemanticRequest("Where is the red square?", ("left", "right"), ("The red square is on the left.",), _image(0)),
    SemanticRequest(
        "Where is the red square?",
        ("left", "right"),
        ("The red square <bbox>[20, 30, 50, 60]</bbox> is left.", "There is a blue circle on the right."),
        _image(10),
    ),
]


def _assert_all_garbage_excluded(judge: ModelJudge, c_verdicts, s_verdicts) -> None:
    for v in [*c_verdicts, *s_verdicts]:
        assert v.status is VerdictStatus.unparseable, f"tiny model's garbage was taken as a verdict: {v.raw!r}"
        assert v.raw.strip(), "the model said nothing: expected garbage text, got none"
        assert math.isnan(v.score)
    c, s = judge.counters.consistency, judge.counters.semantic
    assert (c.ok, c.unparseable, c.failed) == (0, len(c_verdicts), 0)
    assert (s.ok, s.unparseable, s.failed) == (0, len(s_verdicts), 0)
    # The constraint means skip them: with two real verdicts (1 and 0) beside the garbage,
    # c_C = (1 + 0) / 2 = 0.5 over count 2, exactly as if the garbage rollouts were absent.
    r_c = torch.tensor([v.score for v in c_verdicts] + [1.0, 0.0])
    r_s = torch.tensor([v.score for v in s_verdicts])
    stats = constraint_stats({"consistency": r_c, "semantic": r_s})
    assert stats.counts == {"consistency": 2, "semantic": 0}
    assert stats.means["consistency"] == 0.5 and math.isnan(stats.means["semantic"])


def test_http_judge_on_vllm_serve_counts_garbage_as_unparseable(judge_server, tmp_path):
    backend = OpenAIBackend("tiny-judge", judge_server.base_url, max_concurrency=4, timeout_s=120, max_tokens=24)
    judge = ModelJudge(backend)
    c_verdicts, s_verdicts = judge.consistency(CONSISTENCY), judge.semantic(SEMANTIC)
    _assert_all_garbage_excluded(judge, c_verdicts, s_verdicts)

    # Unparseable is the judge's deterministic answer (greedy): cached, and re-scoring costs nothing.
    cache = VerdictCache(tmp_path / "cache")
    cached = CachedJudge(judge, cache)
    first = [v.raw for v in cached.consistency(CONSISTENCY)]
    again = [v.raw for v in cached.consistency(CONSISTENCY)]
    cache.close()
    assert first == again == [v.raw for v in c_verdicts]  # greedy: the same garbage every time
    assert cached.stats.misses == len(CONSISTENCY) and cached.stats.hits == len(CONSISTENCY)
    assert judge.counters.consistency.unparseable == 2 * len(CONSISTENCY)  # the cached pass asked no one


def test_http_judge_unknown_model_fails_without_retry(judge_server):
    judge = ModelJudge(OpenAIBackend("no-such-model", judge_server.base_url, max_retries=3, retry_backoff_s=0.01))
    (v,) = judge.consistency(CONSISTENCY[:1])
    assert v.status is VerdictStatus.failed and "NotFound" in v.raw  # 404: not transient
    assert judge.counters.consistency.failed == 1


def test_offline_vllm_judge_counts_garbage_and_matches_the_server(vllm_engine, judge_server):
    judge = ModelJudge(VLLMBackend(vllm_engine.llm, "tiny-judge", max_tokens=24))
    c_verdicts, s_verdicts = judge.consistency(CONSISTENCY), judge.semantic(SEMANTIC)
    _assert_all_garbage_excluded(judge, c_verdicts, s_verdicts)
    # Same weights, same chat template, greedy, float32: the offline engine and the server agree.
    http = OpenAIBackend("tiny-judge", judge_server.base_url, max_tokens=24)
    assert [c.text for c in http.complete([consistency_messages(r) for r in CONSISTENCY])] == [
        v.raw for v in c_verdicts
    ]


def test_offline_vllm_judge_isolates_a_prompt_the_engine_rejects(vllm_engine):
    # One prompt far over max_model_len (2048) fails alone; the batch's other prompts still answer.
    too_long = ConsistencyRequest("Where?", ("a", "b"), "left " * 5000, "A")
    judge = ModelJudge(VLLMBackend(vllm_engine.llm, "tiny-judge", max_tokens=8))
    verdicts = judge.consistency([CONSISTENCY[0], too_long, CONSISTENCY[1]])
    assert [v.status for v in verdicts] == [VerdictStatus.unparseable, VerdictStatus.failed, VerdictStatus.unparseable]
    assert all(math.isnan(v.score) for v in verdicts)
    assert judge.counters.consistency.failed == 1


def test_agreement_command_end_to_end_on_vllm_serve(judge_server, tmp_path, capsys):
    import json

    import yaml

    from flows.cmd_judges import agreement_main

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "data": {"out_dir": str(tmp_path / "staged")},
                "judges": {
                    "cache_dir": str(tmp_path / "cache"),
                    "model_judge": {"backend": "openai", "model": "tiny-judge", "base_url": judge_server.base_url,
                                    "max_tokens": 16, "timeout_s": 120},
                },
            }
        )
    )
    out = tmp_path / "agreement.json"
    assert agreement_main(["--params", str(params), "--limit", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    c, s = report["consistency"], report["semantic"]
    assert report["reference"] == "exact@1" and report["candidate"].startswith("model:tiny-judge@")
    # the tiny model's answers are all unparseable: counted, nothing compared, no figure invented
    assert (c["requests"], c["candidate_unparseable"], c["units"]) == (3, 3, 0)
    assert c["accuracy"] is None and c["kappa"] is None
    assert s["requests"] > 0 and s["candidate_unparseable"] == s["requests"] and s["units"] == 0
    assert "| consistency | 3 | 0 | n/a | n/a | 0 | 3 | 0 | 0 |" in capsys.readouterr().out
