"""A persistent verdict cache, so that re-scoring a round costs no judge calls.

Key = sha256 over (judge name, judge version, signal, inputs); a model judge's name holds its
model and its version is the prompt version (``model.py``), and the inputs include the raw
pixels of the image (mode, size, bytes) and the scene graph. Any change to one of them is a
different key, so a stale verdict is never served.

Only ``ok`` and ``unparseable`` verdicts are stored: both are the judge's deterministic answer
to these inputs (greedy). ``failed`` means no answer (timeout, 5xx...), so it is not stored and
the next scoring asks again.

The store is one SQLite file (stdlib ``sqlite3``) inside a directory the caller passes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from fgrpo_core.judges.base import (
    ConsistencyRequest,
    ConsistencyVerdict,
    Judge,
    SemanticRequest,
    SemanticVerdict,
    SentenceLabel,
    VerdictStatus,
)

CACHE_FILE = "verdicts.sqlite"
_CACHED_STATUSES = (VerdictStatus.ok, VerdictStatus.unparseable)


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------
def _hash_parts(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        # Length-prefix every part so ("ab", "c") and ("a", "bc") never collide.
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()


def consistency_key(judge_name: str, judge_version: str, req: ConsistencyRequest) -> str:
    return _hash_parts(
        [
            b"consistency",
            judge_name.encode(),
            judge_version.encode(),
            _json([req.question, list(req.choices), req.reasoning, req.answer]),
            _json(req.scene),
        ]
    )


def semantic_key(judge_name: str, judge_version: str, req: SemanticRequest) -> str:
    image = req.image
    pixels = [b"no-image"] if image is None else [_json([image.mode, list(image.size)]), image.tobytes()]
    return _hash_parts(
        [
            b"semantic",
            judge_name.encode(),
            judge_version.encode(),
            _json([req.question, list(req.choices), list(req.sentences)]),
            _json(req.scene),
            *pixels,
        ]
    )


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------
class VerdictCache:
    """Verdicts by key in ``<directory>/verdicts.sqlite``. Safe to share between threads."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts ("
                " key TEXT PRIMARY KEY, judge TEXT NOT NULL, version TEXT NOT NULL,"
                " signal TEXT NOT NULL, payload TEXT NOT NULL)"
            )

    def __repr__(self) -> str:
        return f"VerdictCache({str(self.path)!r})"

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # SQLite caps host parameters per query
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, payload FROM verdicts WHERE key IN ({marks})", chunk)
                found.update((k, json.loads(p)) for k, p in rows)
        return found

    def put_many(self, rows: Sequence[tuple[str, str, str, str, dict[str, Any]]]) -> None:
        """``rows``: (key, judge name, judge version, signal, payload)."""
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO verdicts (key, judge, version, signal, payload) VALUES (?, ?, ?, ?, ?)",
                [(k, j, v, s, json.dumps(p)) for k, j, v, s, p in rows],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --------------------------------------------------------------------------------------------
# Verdict <-> payload
# --------------------------------------------------------------------------------------------
def _consistency_payload(v: ConsistencyVerdict) -> dict[str, Any]:
    return {"status": v.status.value, "consistent": v.consistent, "raw": v.raw}


def _consistency_from(p: dict[str, Any]) -> ConsistencyVerdict:
    return ConsistencyVerdict(VerdictStatus(p["status"]), p["consistent"], p["raw"])


def _semantic_payload(v: SemanticVerdict) -> dict[str, Any]:
    return {"status": v.status.value, "labels": [lab.value for lab in v.labels], "raw": v.raw}


def _semantic_from(p: dict[str, Any]) -> SemanticVerdict:
    return SemanticVerdict(VerdictStatus(p["status"]), [SentenceLabel(x) for x in p["labels"]], p["raw"])


# --------------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------------
R = TypeVar("R")
V = TypeVar("V", ConsistencyVerdict, SemanticVerdict)


@dataclass
class CacheStats:
    hits: int = 0  # requests answered without asking the judge
    misses: int = 0  # requests passed on to the wrapped judge (distinct keys only)


class CachedJudge:
    """Any :class:`Judge`, answering from ``cache`` where it can and asking the judge for the rest."""

    def __init__(self, judge: Judge, cache: VerdictCache):
        self.judge = judge
        self.cache = cache
        self.name = judge.name
        self.version = judge.version
        self.stats = CacheStats()

    def __repr__(self) -> str:
        return f"CachedJudge({self.judge!r}, {self.cache!r})"

    def consistency(self, requests: Sequence[ConsistencyRequest]) -> list[ConsistencyVerdict]:
        keys = [consistency_key(self.name, self.version, r) for r in requests]
        return self._score(
            "consistency", requests, keys, self.judge.consistency, _consistency_payload, _consistency_from
        )

    def semantic(self, requests: Sequence[SemanticRequest]) -> list[SemanticVerdict]:
        keys = [semantic_key(self.name, self.version, r) for r in requests]
        return self._score("semantic", requests, keys, self.judge.semantic, _semantic_payload, _semantic_from)

    def _score(
        self,
        signal: str,
        requests: Sequence[R],
        keys: list[str],
        ask: Callable[[Sequence[R]], list[V]],
        to_payload: Callable[[V], dict[str, Any]],
        from_payload: Callable[[dict[str, Any]], V],
    ) -> list[V]:
        stored = self.cache.get_many(keys)
        # Ask once per distinct missing key (a round often repeats a rollout).
        first_index: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in stored:
                first_index.setdefault(k, i)
        missing = list(first_index)
        fresh: dict[str, V] = {}
        if missing:
            answers = ask([requests[first_index[k]] for k in missing])
            if len(answers) != len(missing):
                raise RuntimeError(f"{self.name}: {len(answers)} verdicts for {len(missing)} requests")
            fresh = dict(zip(missing, answers))
            self.cache.put_many(
                [
                    (k, self.name, self.version, signal, to_payload(v))
                    for k, v in fresh.items()
                    if v.status in _CACHED_STATUSES
                ]
            )
        self.stats.hits += len(keys) - len(missing)
        self.stats.misses += len(missing)
        # Cached verdicts are rebuilt per position, so callers never share one mutable object.
        return [from_payload(stored[k]) if k in stored else from_payload(to_payload(fresh[k])) for k in keys]
