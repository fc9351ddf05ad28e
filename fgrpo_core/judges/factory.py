"""The judge a params section asks for (training scoring and evaluation build it the same way)."""

from __future__ import annotations

from typing import Any, Sequence

from fgrpo_core.config import JudgeParams
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


def build_judge(jp: JudgeParams, llm: Any = None) -> Any:
    """Exact scene-graph verifier and/or a cached model judge, as ``jp`` says.

    ``llm`` is the ``vllm.LLM`` serving the judge when ``model_judge.backend`` is ``vllm``.
    """
    from fgrpo_core.judges.exact import ExactJudge

    exact, model = ExactJudge(), None
    if "model" in (jp.consistency, jp.semantic):
        if jp.model_judge is None:
            raise ValueError("judges.model_judge is required when judges.consistency or judges.semantic is 'model'")
        from fgrpo_core.judges.cache import CachedJudge, VerdictCache
        from fgrpo_core.judges.model import model_judge_from_endpoint

        model = CachedJudge(model_judge_from_endpoint(jp.model_judge, llm), VerdictCache(jp.cache_dir))
    pick = {"exact": exact, "model": model}
    c, s = pick[jp.consistency], pick[jp.semantic]
    return c if c is s else RoutedJudge(c, s)
