"""The verdict cache: re-scoring costs no judge calls; any change of judge, prompt or input misses."""

from __future__ import annotations

import math
from typing import Sequence

import pytest
from PIL import Image

from fgrpo_core.judges.base import ConsistencyRequest, SemanticRequest, SentenceLabel, VerdictStatus
from fgrpo_core.judges.cache import CachedJudge, VerdictCache, consistency_key, semantic_key
from fgrpo_core.judges.model import Completion, ModelJudge
from fgrpo_core.judges.prompts import ChatMessages


class CountingBackend:
    """A chat backend that answers from the prompt text and records every prompt it is sent.

    consistency: "CONSISTENT" when the reasoning contains "so A"; semantic: one CORRECT per
    sentence; prompts whose text contains "GARBAGE" get an unparseable answer, "FAIL" no answer.
    """

    model = "counting-model"

    def __init__(self) -> None:
        self.prompts: list[ChatMessages] = []
        self.fail = True

    def complete(self, prompts: Sequence[ChatMessages]) -> list[Completion]:
        self.prompts += prompts
        out = []
        for p in prompts:
            text = p[-1]["content"][-1]["text"]
            if "FAIL" in text and self.fail:
                out.append(Completion(None, "scripted outage"))
            elif "GARBAGE" in text:
                out.append(Completion("I am not sure"))
            elif "Sentences (" in text:
                n = int(text.split("Sentences (", 1)[1].split(")", 1)[0])
                out.append(Completion("\n".join(f"{i}: CORRECT" for i in range(1, n + 1))))
            else:
                out.append(Completion("VERDICT: CONSISTENT" if "so A" in text else "VERDICT: INCONSISTENT"))
        return out


def img(value: int = 0) -> Image.Image:
    im = Image.new("RGB", (28, 28), (10, 20, 30))
    im.putpixel((0, 0), (value, 0, 0))
    return im


def creq(i: int, reasoning: str = "so A") -> ConsistencyRequest:
    return ConsistencyRequest(f"question {i}", ("left", "right"), reasoning, "A")


def sreq(i: int, image: Image.Image | None = None) -> SemanticRequest:
    return SemanticRequest(f"question {i}", ("left", "right"), ("A red cube.", "It is left."), image or img(i))


@pytest.fixture
def cached(tmp_path):
    backend = CountingBackend()
    cache = VerdictCache(tmp_path / "judge-cache")
    yield CachedJudge(ModelJudge(backend), cache), backend
    cache.close()


def test_second_scoring_of_a_round_makes_zero_backend_calls(cached):
    judge, backend = cached
    c_reqs = [creq(i) for i in range(5)] + [creq(9, "so B")]
    s_reqs = [sreq(i) for i in range(4)]
    cold_c, cold_s = judge.consistency(c_reqs), judge.semantic(s_reqs)
    assert len(backend.prompts) == 10
    warm_c, warm_s = judge.consistency(c_reqs), judge.semantic(s_reqs)
    assert len(backend.prompts) == 10  # nothing new was asked
    assert [v.score for v in warm_c] == [v.score for v in cold_c] == [1.0] * 5 + [0.0]
    assert [v.labels for v in warm_s] == [v.labels for v in cold_s] == [[SentenceLabel.correct] * 2] * 4
    assert [v.raw for v in warm_c] == [v.raw for v in cold_c]
    assert (judge.stats.hits, judge.stats.misses) == (10, 10)
    assert len(judge.cache) == 10


def test_cache_persists_across_reopen(tmp_path):
    backend = CountingBackend()
    first = VerdictCache(tmp_path / "c")
    CachedJudge(ModelJudge(backend), first).consistency([creq(0), creq(1)])
    first.close()
    second = VerdictCache(tmp_path / "c")
    again = CachedJudge(ModelJudge(backend), second).consistency([creq(1), creq(0)])
    second.close()
    assert len(backend.prompts) == 2
    assert [v.score for v in again] == [1.0, 1.0]


def test_duplicate_requests_in_a_batch_are_asked_once(cached):
    judge, backend = cached
    verdicts = judge.consistency([creq(0), creq(1), creq(0), creq(0)])
    assert len(backend.prompts) == 2
    assert [v.score for v in verdicts] == [1.0] * 4
    verdicts[0].consistent = False  # callers get their own objects, not one shared instance
    assert verdicts[2].consistent is True


def test_failed_verdicts_are_not_cached_and_are_asked_again(cached):
    judge, backend = cached
    reqs = [creq(0), creq(1, "FAIL so A")]
    first = judge.consistency(reqs)
    assert [v.status for v in first] == [VerdictStatus.ok, VerdictStatus.failed]
    assert math.isnan(first[1].score)
    backend.fail = False  # the outage is over
    second = judge.consistency(reqs)
    assert len(backend.prompts) == 3  # only the failed one was asked again
    assert [v.status for v in second] == [VerdictStatus.ok, VerdictStatus.ok]
    assert judge.judge.counters.consistency.failed == 1


def test_unparseable_verdicts_are_cached_as_unparseable(cached):
    judge, backend = cached
    (first,) = judge.consistency([creq(0, "GARBAGE")])
    (second,) = judge.consistency([creq(0, "GARBAGE")])
    assert len(backend.prompts) == 1
    assert first.status is second.status is VerdictStatus.unparseable
    assert math.isnan(second.score) and second.raw == "I am not sure"


def test_changing_the_image_changes_the_key_and_asks_again(cached):
    judge, backend = cached
    judge.semantic([sreq(0, img(1))])
    judge.semantic([sreq(0, img(1))])
    assert len(backend.prompts) == 1
    judge.semantic([sreq(0, img(2))])  # one pixel differs
    assert len(backend.prompts) == 2


def test_changing_the_prompt_version_or_the_model_misses(tmp_path):
    backend = CountingBackend()
    cache = VerdictCache(tmp_path / "c")
    v1 = ModelJudge(backend)
    CachedJudge(v1, cache).consistency([creq(0)])
    v2 = ModelJudge(backend)
    v2.version = "fgrpo-judges-v2"
    CachedJudge(v2, cache).consistency([creq(0)])
    assert len(backend.prompts) == 2
    other = ModelJudge(backend)
    other.name = "model:another-model"
    CachedJudge(other, cache).consistency([creq(0)])
    assert len(backend.prompts) == 3
    CachedJudge(ModelJudge(backend), cache).consistency([creq(0)])  # back to v1: a hit
    assert len(backend.prompts) == 3
    cache.close()


# ------------------------------------------------------------------------------ the keys
def test_keys_change_with_every_input_and_only_with_inputs():
    base = semantic_key("model:m", "v1", sreq(0, img(3)))
    assert base == semantic_key("model:m", "v1", sreq(0, img(3)))  # same inputs, new objects
    variants = [
        semantic_key("model:other", "v1", sreq(0, img(3))),
        semantic_key("model:m", "v2", sreq(0, img(3))),
        semantic_key("model:m", "v1", sreq(1, img(3))),  # question
        semantic_key("model:m", "v1", sreq(0, img(4))),  # one pixel
        semantic_key("model:m", "v1", sreq(0, img(3).convert("RGBA"))),  # same pixels, other mode
        semantic_key("model:m", "v1", SemanticRequest("question 0", ("left", "right"), ("A red cube.",), img(3))),
        semantic_key(
            "model:m", "v1", SemanticRequest("question 0", ("left", "right"), ("A red cube.", "It is left."), img(3), {"o": 1})
        ),
    ]
    assert len({base, *variants}) == len(variants) + 1
    c = consistency_key("model:m", "v1", creq(0))
    assert c != consistency_key("model:m", "v1", ConsistencyRequest("question 0", ("left", "right"), "so A", "B"))
    assert c != consistency_key("model:m", "v1", ConsistencyRequest("question 0", ("left", "right"), "so  A", "A"))


def test_key_parts_cannot_run_into_each_other():
    # Without length prefixes, ("ab", "c") and ("a", "bc") would hash alike.
    assert consistency_key("ab", "c", creq(0)) != consistency_key("a", "bc", creq(0))
