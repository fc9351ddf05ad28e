"""A flaky judge endpoint during training rounds: a real HTTP server on 127.0.0.1 (the scripted
OpenAI-shaped server of tests/test_judges_http.py) as the model judge of both R_C and R_S.

Each distinct request of a signal falls into one class by the order in which the server first
sees it (k = 0, 1, 2, ... per signal), fixed shares of 30% faulty and 10% flaky:

    k % 10 == 0   times out (answers after 1 s; the client waits 0.3 s)    -> failed
    k % 10 == 1   HTTP 503 on every attempt                                -> failed
    k % 10 == 2   HTTP 200 with garbage text                               -> unparseable
    k % 10 == 3   HTTP 500 on its first call, then a good answer           -> ok (one retry)
    otherwise     a good answer                                            -> ok

Every good answer is INCONSISTENT / every sentence INCORRECT, so a constraint mean over the ok
verdicts is exactly 0: a failure counted as satisfied would lift it above 0, a failure counted as
0 would raise its count. What must hold: the rounds complete with finite losses, each round's
train_metrics.csv row counts its verdicts by status (equal to scores.parquet), failed and
unparseable verdicts score NaN and stay out of c_k (multipliers.csv: mean 0 over exactly the ok
verdicts, lambda rising by eta * tau), and no request is sent more than 1 + max_retries times.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter

import pandas as pd
import pytest

from fgrpo_core.config import load_params
from tests.faults.conftest import PRESET, N_RL
from tests.test_judges_http import KEY_ENV, SECRET, Reply, ScriptedServer

MAX_RETRIES = 2
TIMEOUT_S = 0.3
ROUNDS = 2


def _text(body: dict) -> str:
    user = body["messages"][-1]["content"]
    return next(p["text"] for p in user if p["type"] == "text")


class FlakyJudge:
    """The plan: a class per request (by content), the server's own record of what it did."""

    CYCLE = ("timeout", "5xx", "garbage", "flaky") + ("good",) * 6

    def __init__(self):
        self.lock = threading.Lock()
        self.calls_per_key: Counter[str] = Counter()
        self.kind_of: dict[str, str] = {}
        self.distinct: Counter[str] = Counter()  # distinct requests seen, per signal

    def __call__(self, index: int, body: dict) -> Reply:
        text = _text(body)
        key = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()  # image too
        signal = "semantic" if "Sentences (" in text else "consistency"
        with self.lock:
            if key not in self.kind_of:
                self.kind_of[key] = self.CYCLE[self.distinct[signal] % len(self.CYCLE)]
                self.distinct[signal] += 1
            self.calls_per_key[key] += 1
            kind, first = self.kind_of[key], self.calls_per_key[key] == 1
        if kind == "timeout":
            return Reply(delay_s=1.0, text="VERDICT: CONSISTENT")  # too late: never read
        if kind == "5xx":
            return Reply(status=503)
        if kind == "garbage":
            return Reply(text="Looks fine to me!")
        if kind == "flaky" and first:
            return Reply(status=500)
        if "Sentences (" in text:
            n = len(re.findall(r"^\d+\. ", text.split("Sentences (", 1)[1], flags=re.M))
            return Reply(text="\n".join(f"{i}: INCORRECT" for i in range(1, n + 1)))
        return Reply(text="VERDICT: INCONSISTENT")


@pytest.fixture
def flaky_server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    plan = FlakyJudge()
    server = ScriptedServer(plan)
    yield server, plan
    server.close()


@pytest.mark.slow
def test_rounds_complete_and_count_judge_failures(flaky_server, tmp_path, tiny_model_dir, faults_data):
    from fgrpo_core.models.loading import load_processor
    from fgrpo_core.train.setup import create_trainer
    from tests.support.replay import ReplayEngine

    server, plan = flaky_server
    data_dir, traces_file = faults_data
    p = load_params(PRESET, [
        f"judges.cache_dir={tmp_path / 'cache'}",
        "rollout.group_size=2", "rollout.max_tokens=128", f"fgrpo.rollout_batch={N_RL}", f"fgrpo.update_batch={N_RL}",
        "fgrpo.micro_batch=16", "fgrpo.lambda_min_count=1", "fgrpo.keep_checkpoints=latest",
    ])
    p.judges.model_judge = {"backend": "openai", "model": "judge-model", "base_url": server.base_url,
                            "api_key_env": KEY_ENV, "timeout_s": TIMEOUT_S, "max_retries": MAX_RETRIES,
                            "retry_backoff_s": 0.01, "max_concurrency": 8}
    p.judges.consistency = p.judges.semantic = "model"  # the endpoint first: params refuse a model judge without one
    traces = {k: tuple(v) for k, v in json.loads(traces_file.read_text()).items()}
    engine = ReplayEngine(traces, load_processor(tiny_model_dir).tokenizer)
    tr = create_trainer(fgrpo=p.fgrpo, rollout=p.rollout, model=p.model, judges=p.judges,
                        init_path=tiny_model_dir, data_dir=data_dir, seed=0, engine=engine,
                        run_dir=tmp_path / "runs", ckpt_dir=tmp_path / "ckpt")
    start = time.monotonic()
    tr.run(ROUNDS, progress=False)
    elapsed = time.monotonic() - start

    runs = tmp_path / "runs"
    metrics = pd.read_csv(runs / "train_metrics.csv")
    hist = pd.read_csv(runs / "multipliers.csv")
    assert metrics["round"].tolist() == list(range(1, ROUNDS + 1))
    assert metrics["loss"].map(math.isfinite).all() and metrics["grad_norm"].map(math.isfinite).all()

    seen = Counter()
    for r in range(1, ROUNDS + 1):
        scores = pd.read_parquet(runs / f"round-{r}" / "scores.parquet")
        row = metrics[metrics["round"] == r].iloc[0]
        for signal in ("consistency", "semantic"):
            status = scores[f"{signal}_status"]
            asked = status[status != "not_applicable"]
            for st in ("ok", "unparseable", "failed"):
                # counted per round, in the metrics row, as the scores say
                assert row[f"judge_{signal}_{st}"] == (asked == st).sum(), (r, signal, st)
                seen[signal, st] += int((asked == st).sum())
            # not a score: failed and unparseable verdicts are NaN, never 0 or 1
            assert scores.loc[status.isin(["failed", "unparseable"]), signal].isna().all()
            ok = scores.loc[status == "ok", signal]
            assert (ok == 0).all() if signal == "consistency" else (ok.dropna() == 0).all()
            # c_k: the masked mean over the ok verdicts only (every one of them 0)
            rec = hist[(hist.step == r - 1) & (hist.constraint == signal)].iloc[0]
            applicable = scores[signal].dropna()
            assert rec["count"] == len(applicable) == row[f"count_{signal}"]
            if len(applicable):
                assert rec["mean"] == 0.0, "a judge failure was counted as satisfied"
                expect = min(rec["lambda_before"] + p.fgrpo.lambda_lr * rec["threshold"], p.fgrpo.lambda_max)
                assert rec["lambda_after"] == pytest.approx(expect)
    for signal in ("consistency", "semantic"):
        for st in ("ok", "unparseable", "failed"):
            assert seen[signal, st] > 0, f"no {st} {signal} verdict: the faults were not exercised ({dict(seen)})"

    # Retries are bounded: at most 1 + max_retries calls per request each time it is asked,
    # exactly that many for the requests that never succeed, two for the flaky ones, one for
    # garbage (an answer, not retried) and good ones.
    kinds = Counter(plan.kind_of.values())
    assert {"timeout", "5xx", "garbage", "flaky", "good"} <= set(kinds), kinds
    askings = 0  # times a never-answering request was sent out (a batch asks a duplicate once)
    for key, n in plan.calls_per_key.items():
        kind = plan.kind_of[key]
        if kind == "flaky":
            assert n == 2, (kind, n)  # one 500, one retry that succeeds; then cached
        elif kind in ("garbage", "good"):
            assert n == 1, (kind, n)  # an answer is not retried; asked again in round 2: from the cache
        else:  # exactly 1 + max_retries calls each time it is asked (failures are not cached)
            assert n % (1 + MAX_RETRIES) == 0, (kind, n)
            askings += n // (1 + MAX_RETRIES)
    failed_verdicts = seen["consistency", "failed"] + seen["semantic", "failed"]
    assert 0 < askings <= failed_verdicts
    # bounded in time too: a timed-out request costs ~ (1 + max_retries) * timeout, never the
    # server's full delay per attempt; generous for a busy CI machine
    assert elapsed < 300
