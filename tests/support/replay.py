"""A rollout engine that replays known completions (a test double for the *sampler* only).

The tiny random policy writes nothing parseable, so every reward is 0 and no constraint is ever
measured. To test scoring, advantages and the dual rule on signals that move, the trainer is fed
completions built from the synthetic SFT traces of the very samples it asks about: the trace as
written (with whatever faults the generator injected), a wrong answer, a broken format, and an
"answer changed after the reasoning" variant. Which variants a group gets depends on (seed,
round, prompt), so groups differ and resume must replay them exactly. Everything downstream
(grader, exact judge, advantages, loss, optimiser, checkpoints) runs for real.
"""

from __future__ import annotations

import hashlib
import re

from fgrpo_core.records import Rollout, RolloutBatch


def variants(trace: str, answer: str, choices) -> list[str]:
    letters = "ABCDEFGHIJ"[: len(choices)]
    wrong = next(c for c in letters if c != answer)
    out = [trace]
    out.append(re.sub(r"<answer>.*?</answer>", f"<answer>{wrong}</answer>", trace))  # wrong answer
    out.append(trace.replace("<think>", "").replace("</think>", " "))  # broken format
    # reasoning concludes another option, the answer stays right: inconsistent
    out.append(re.sub(r"answer is [A-J]", f"answer is {wrong}", trace))
    return out


class ReplayEngine:
    def __init__(self, traces: dict[str, tuple[str, str, list[str]]], tokenizer):
        self.traces = traces  # prompt_id -> (trace, answer, choices)
        self.tok = tokenizer
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.policy_version = 0
        self.pushes = 0

    def generate(self, prompts, sampling):
        rollouts = []
        for p in prompts:
            trace, answer, choices = self.traces[p.prompt_id]
            cands = variants(trace, answer, choices)
            for i in range(sampling.n):
                h = hashlib.sha256(f"{sampling.seed}:{p.prompt_id}:{i}".encode()).digest()[0]
                text = cands[h % len(cands)]
                ids = self.tok.encode(text, add_special_tokens=False)[: sampling.max_tokens - 1] + [self.eos]
                rollouts.append(Rollout(p.prompt_id, i, self.tok.decode(ids, skip_special_tokens=True), ids,
                                        None, "stop"))
        return RolloutBatch(rollouts, self.policy_version)

    def update_weights(self, named_tensors):
        sum(1 for _ in named_tensors)
        self.pushes += 1
        self.policy_version += 1
        return self.policy_version

    def load_weights_from(self, path):
        self.policy_version = int(str(path).rsplit("-", 1)[-1])
        return self.policy_version


def stage_with_traces(out, n_rl: int, n_sft: int, fault_share: float = 0.3):
    """Stage the tiny synthetic data at ``out`` (RL split of ``n_rl`` prompts) and return
    ``(out, traces)``: the RL prompts' synthetic traces, keyed by id, for a :class:`ReplayEngine`."""
    from fgrpo_core.config import Params
    from fgrpo_core.data.stage import stage_data
    from fgrpo_core.data.synthetic import generate_samples

    p = Params()
    s = p.data.synthetic
    s.n_sft, s.n_rl, s.n_val, s.n_test = n_sft, n_rl, 2, 2
    s.inconsistent_share = s.hallucination_share = s.bad_box_share = fault_share
    stage_data(p.data, p.model.min_pixels, p.model.max_pixels, out)
    traced = generate_samples(s, n=n_rl, split="rl", with_trace=True)
    return out, {t.id: (t.trace, t.answer, list(t.choices)) for t in traced}
