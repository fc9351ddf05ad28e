"""The judge a params section asks for (training scoring and evaluation build it the same way)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from fgrpo_core.config import JudgeParams, ParamsError
from fgrpo_core.judges.base import ConsistencyRequest, ConsistencyVerdict, SemanticRequest, SemanticVerdict


class RoutedJudge:
    """Consistency from one judge, semantic grounding from another."""

    def __init__(self, consistency_judge: Any, semantic_judge: Any):
        self.c, self.s = consistency_judge, semantic_judge
        self.name = f"{self.c.name}+{self.s.name}"
        self.version = f"{self.c.version}+{self.s.version}"

    def consistency(self, requests: Sequence[ConsistencyRequest]) -> list[ConsistencyVerdict]:
        return self.c.consistency(requests)

    def semantic(self, requests: Sequence[SemanticRequest]) -> list[SemanticVerdict]:
        return self.s.semantic(requests)


def build_judge(jp: JudgeParams, judge_llm: Callable[[str], Any] | None = None) -> Any:
    """The judge the params ask for: exact verifier and/or a cached model judge.

    ``judge_llm(model)`` builds the ``vllm.LLM`` of a ``backend: vllm`` judge; it is called only
    for that backend (never hand the *policy's* engine to the judge: it would judge itself).
    """
    from fgrpo_core.judges.exact import ExactJudge

    exact, model = ExactJudge(), None
    if "model" in (jp.consistency, jp.semantic):
        if jp.model_judge is None:
            raise ParamsError("judges.model_judge is required when a judge is 'model'")
        from fgrpo_core.judges.cache import CachedJudge, VerdictCache
        from fgrpo_core.judges.model import model_judge_from_endpoint

        llm = None
        if jp.model_judge.backend == "vllm":
            if judge_llm is None:
                raise ParamsError("judges.model_judge.backend is 'vllm' but no way to start its engine was given")
            llm = judge_llm(jp.model_judge.model)
        model = CachedJudge(model_judge_from_endpoint(jp.model_judge, llm), VerdictCache(jp.cache_dir))
    pick = {"exact": exact, "model": model}
    c, s = pick[jp.consistency], pick[jp.semantic]
    return c if c is s else RoutedJudge(c, s)
