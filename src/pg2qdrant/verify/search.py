"""Check 5 building blocks: search-parity metrics and the query vectors they are measured with.

Pure metrics (score conversion, recall@k, top-1, Spearman on the overlap,
:class:`ParityStats` and its verdict) plus query sampling (:class:`QueryReservoir`)
and ``--verify.queries-file`` loading. Separate from the checks so the metrics can be
tested without a database or a collection.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.vectors import SparseValue
from pg2qdrant.core.plan import VectorSpec
from pg2qdrant.verify.options import SCORE_PAIRS_KEPT, Thresholds
from pg2qdrant.verify.report import FAIL, PASS, SKIP, WARN, worst

# ---------------------------------------------------------------------------------------
# Check 5 helpers: scores, recall, rank correlation (pure functions)
# ---------------------------------------------------------------------------------------

# pgvector operator giving each Qdrant distance, and how its value becomes Qdrant's score.
PG_OPERATORS = {
    "Cosine": ("<=>", "score = 1 - cosine distance"),
    "Dot": ("<#>", "score = -(negative inner product)"),
    "Euclid": ("<->", "score = L2 distance"),
    "Manhattan": ("<+>", "score = L1 distance"),
}
HAMMING = ("<~>", "score = Hamming distance (Manhattan on 0/1)")


def qdrant_score(distance: str, pg_distance: float) -> float:
    """pgvector's operator value converted to the score Qdrant reports for ``distance``."""
    if distance == "Cosine":
        return 1.0 - pg_distance
    if distance == "Dot":
        return -pg_distance
    return pg_distance  # Euclid, Manhattan (and Hamming on bits): Qdrant reports the distance


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a))


def recall_at_k(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]], *,
                tol: float) -> float | None:
    """Share of the expected top-k that was found; a found point tied with the k-th expected
    score counts too (ties at the boundary can be returned in either order). None if nothing expected."""
    if not expected:
        return None
    want = {pid for pid, _ in expected}
    kth = expected[-1][1]
    hits = 0
    for pid, score in found[:len(expected)]:
        # A point pgvector did not list but that scores like its k-th one is a tie at the boundary.
        # (A "better" score is not a hit: exact search cannot miss one, so it means the scores disagree.)
        if pid in want or _close(kth, score, tol):
            hits += 1
    return min(hits, len(expected)) / len(expected)


def top1_agrees(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]], tol: float) -> bool:
    if not expected:
        return True
    if not found:
        return False
    return found[0][0] == expected[0][0] or _close(expected[0][1], found[0][1], tol)


def _fractional_ranks(scores: Sequence[float], tol: float) -> np.ndarray:
    """Ranks of a list already in rank order; a run of tied scores shares its average rank."""
    ranks = np.arange(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and _close(scores[i], scores[j + 1], tol):
            j += 1
        ranks[i:j + 1] = (i + j) / 2
        i = j + 1
    return ranks


def spearman_on_overlap(expected: Sequence[tuple[Any, float]], found: Sequence[tuple[Any, float]],
                        tol: float = 0.0) -> float | None:
    """Spearman's rho between the two rankings of the points both lists contain.

    Tied scores (within ``tol``) share their average rank, so points at equal distance
    returned in another order (common with Hamming distances) do not count as disagreement.
    None with fewer than 2 common points, or when only one side ranks them all as tied.
    """
    in_found = {pid for pid, _ in found}
    common = [(pid, score) for pid, score in expected if pid in in_found]
    if len(common) < 2:
        return None
    in_common = {pid for pid, _ in common}
    found_common = [(pid, score) for pid, score in found if pid in in_common]
    rank_found = dict(zip((pid for pid, _ in found_common),
                          _fractional_ranks([s for _, s in found_common], tol)))
    a = _fractional_ranks([s for _, s in common], tol)
    b = np.array([rank_found[pid] for pid, _ in common])
    if a.std() == 0 or b.std() == 0:
        return 1.0 if a.std() == b.std() == 0 else None
    return float(np.corrcoef(a, b)[0, 1])


def distribution(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "min": float(a.min()),
            "p5": float(np.percentile(a, 5))}


@dataclass
class ParityStats:
    """One vector, one Qdrant search mode, against pgvector's exact top-k."""

    mode: str  # exact | HNSW
    recalls: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)
    spearman: list[float] = field(default_factory=list)
    empty: int = 0  # queries where pgvector found points and Qdrant none
    max_score_diff: float = 0.0
    score_pairs: list[tuple[float, float]] = field(default_factory=list)
    worst: list[tuple[float, Any, str]] = field(default_factory=list)  # (recall, query label, what differs)

    def add(self, label: Any, expected, found, *, tol: float) -> None:
        recall = recall_at_k(expected, found, tol=tol)
        if recall is None:
            return
        self.recalls.append(recall)
        self.top1.append(top1_agrees(expected, found, tol))
        rho = spearman_on_overlap(expected, found, tol)
        if rho is not None:
            self.spearman.append(rho)
        if not found:
            self.empty += 1
        scores = dict(found)
        for pid, score in expected:
            if pid in scores:
                diff = abs(score - scores[pid]) / max(1.0, abs(score))
                self.max_score_diff = max(self.max_score_diff, diff)
                if len(self.score_pairs) < SCORE_PAIRS_KEPT:
                    self.score_pairs.append((score, scores[pid]))
        if recall < 1.0:
            lost = [p for p, _ in expected if p not in scores][:5]
            extra = [p for p, _ in found if p not in {q for q, _ in expected}][:5]
            self.worst.append((recall, label, f"recall {recall:.2f}; pgvector's points not returned: {lost}; "
                                              f"returned instead: {extra}"))

    # complexity: the parity verdict from the thresholds (recall, top-1, scores), each failing rule named in the
    # finding.
    def judge(self, t: Thresholds, *, exact: bool) -> tuple[str, list[str]]:
        """Verdict and the criteria that were missed (or that could not be judged)."""
        if not self.recalls:
            return SKIP, ["no query had results in pgvector"]
        d = distribution(self.recalls)
        top1 = float(np.mean(self.top1))
        missed: list[tuple[str, str]] = []  # (verdict, why)
        if top1 < t.top1:
            missed.append((FAIL, f"top-1 agreement {top1:.0%} < {t.top1:.0%}"))
        if d["mean"] < t.overlap:
            missed.append((FAIL, f"mean top-k overlap {d['mean']:.3f} < {t.overlap}"))
        if self.empty:
            missed.append((FAIL, f"{self.empty} queries returned nothing where pgvector found points"))
        if len(self.recalls) >= t.tier2_queries:
            if d["mean"] < t.recall_investigate:
                missed.append((FAIL, f"mean recall {d['mean']:.3f} < {t.recall_investigate}"))
            elif d["mean"] < t.recall_mean:
                missed.append((WARN, f"mean recall {d['mean']:.3f} < {t.recall_mean} (investigate)"))
            for name, limit in (("median", t.recall_median), ("min", t.recall_min), ("p5", t.recall_p5)):
                if d[name] < limit:
                    missed.append((FAIL, f"{name} recall {d[name]:.3f} < {limit}"))
            if self.spearman and float(np.mean(self.spearman)) <= t.spearman:
                missed.append((FAIL, f"mean Spearman {float(np.mean(self.spearman)):.3f} <= {t.spearman}"))
        if exact:
            if d["mean"] < t.exact_recall:
                missed.append((FAIL, f"exact search: mean recall {d['mean']:.3f} < {t.exact_recall} "
                                     "(the same data should give the same neighbours)"))
            if self.max_score_diff > t.score_tolerance:
                missed.append((FAIL, f"scores differ by up to {self.max_score_diff:.2g} (relative) > "
                                     f"{t.score_tolerance:g}"))
        return worst(v for v, _ in missed) if missed else PASS, [why for _, why in missed]

    def figures(self) -> dict[str, Any]:
        if not self.recalls:
            return {}
        d = distribution(self.recalls)
        return {"queries": len(self.recalls), "recall mean": d["mean"], "recall median": d["median"],
                "recall min": d["min"], "recall p5": d["p5"], "top-1 agreement": float(np.mean(self.top1)),
                "Spearman mean": float(np.mean(self.spearman)) if self.spearman else None,
                "empty results": self.empty, "max score difference (relative)": self.max_score_diff}


# ---------------------------------------------------------------------------------------
# Query vectors: sampled from the table or read from --verify.queries-file
# ---------------------------------------------------------------------------------------

class QueryReservoir:
    """A uniform sample of up to ``n`` (point ID, vector) per named vector from a stream of batches."""

    def __init__(self, names: Sequence[str], n: int, rng: random.Random):
        self.n, self.rng = n, rng
        self.kept: dict[str, list[tuple[Any, Any]]] = {name: [] for name in names}
        self.seen = dict.fromkeys(names, 0)

    def offer(self, batch: PointBatch) -> None:
        if self.n <= 0:
            return
        for i, pid in enumerate(batch.ids):
            vectors = batch.vectors_of(i)
            for name, kept in self.kept.items():
                v = vectors.get(name)
                if v is None:
                    continue
                self.seen[name] += 1
                if len(kept) < self.n:
                    kept.append((pid, _copy_vector(v)))
                else:
                    j = self.rng.randrange(self.seen[name])
                    if j < self.n:
                        kept[j] = (pid, _copy_vector(v))


def _copy_vector(v: Any) -> Any:
    return v if isinstance(v, SparseValue) else np.array(v, copy=True)


# complexity: reads the three accepted query file shapes (JSON list, JSON lines, per-vector objects) with a clear
# error for each mistake.
def load_queries_file(path: str, specs: Sequence[VectorSpec]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Query vectors from ``.npy`` (one 2-D array), ``.json`` (a list of vectors, or {vector name: list})
    or ``.jsonl`` (one vector per line). A bare list is for the only searched vector."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            data: Any = np.load(p, allow_pickle=False).tolist()
        elif p.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--verify.queries-file {path}: cannot read it ({exc}).",
                         fix="give a .npy array (queries x dimension), a .json list of vectors (or "
                             "{\"vector name\": [...]}) or a .jsonl file with one vector per line.") from None
    by_name = {s.name: s for s in specs}
    if isinstance(data, dict):
        unknown = [n for n in data if n not in by_name]
        if unknown:
            raise InputError(f"--verify.queries-file {path} names vector(s) {unknown} that are not searched.",
                             fix=f"searched vectors: {', '.join(by_name)} (choose with --verify.vector).")
        named = data
    elif len(specs) == 1:
        named = {specs[0].name: data}
    else:
        raise InputError(f"--verify.queries-file {path} holds a plain list, but {len(specs)} vectors are searched "
                         f"({', '.join(by_name)}).",
                         fix="choose one with --verify.vector NAME, or write {\"vector name\": [[...], ...]}.")
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, vectors in named.items():
        spec = by_name[name]
        if spec.is_sparse:
            raise InputError(f"--verify.queries-file: vector {name!r} is sparse; query files hold dense vectors.",
                             fix="leave it out of the file (sparse queries are sampled from the table).")
        rows = []
        for i, v in enumerate(vectors if isinstance(vectors, list) else []):
            arr = np.asarray(v, dtype=np.float32)
            if arr.ndim != 1 or len(arr) != spec.size or not np.isfinite(arr).all():
                raise InputError(f"--verify.queries-file {path}: query {i} for {name!r} is not a vector of "
                                 f"{spec.size} finite numbers.",
                                 fix=f"every query for {name!r} must have {spec.size} numbers.")
            rows.append((f"file #{i}", arr))
        if not rows:
            raise InputError(f"--verify.queries-file {path} holds no query for {name!r}.",
                             fix="put at least one vector in it.")
        out[name] = rows
    return out
