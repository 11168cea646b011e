"""Options and thresholds of `pg2qdrant verify`: defaults, --verify.* parsing and validation.

Separate so the command line (:mod:`pg2qdrant.cli.verify`) can build and validate
:class:`VerifyOptions` without the checks; the tuning constants the checks share
(batch sizes, memory budget, examples kept) live here too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pg2qdrant.core.errors import InputError
from pg2qdrant.runtime.ids import ID_MEMORY_MB
from pg2qdrant.verify.report import report_format

# From Qdrant's migration guide: its tier 2 search check takes >= 50 queries and measures recall@10;
# the payload sample is "at least 1,000 rows or 1% (all rows under 100k)".
DEFAULT_QUERIES = 50
DEFAULT_K = 10
SAMPLE_ALL_BELOW = 100_000
SAMPLE_MIN_ROWS = 1_000
SAMPLE_FRACTION = 0.01
INDEX_TIMEOUT_S = 300.0  # wait this long for Qdrant's optimizer before measuring HNSW recall
INDEX_POLL_S = 1.0
RETRIEVE_BATCH = 256  # points per retrieve of the values check (vectors included)
SCORE_PAIRS_KEPT = 2_000  # points per scatter plot series


@dataclass(frozen=True)
class Thresholds:
    """Pass marks. Defaults: Qdrant's migration guide (tiers 1 and 2), plus exactness for exact search."""

    top1: float = 0.80  # tier 1: share of queries whose nearest point is the same
    overlap: float = 0.70  # tier 1: mean top-k overlap
    recall_mean: float = 0.85  # tier 2: mean recall@k passes at or above this...
    recall_investigate: float = 0.70  # ...warns between this and recall_mean, fails below
    recall_median: float = 0.90
    recall_min: float = 0.50
    recall_p5: float = 0.60
    spearman: float = 0.80  # mean Spearman rank correlation on the overlap
    tier2_queries: int = 50  # tier 2 is judged only with at least this many queries
    exact_recall: float = 0.99  # Qdrant exact vs pgvector exact: the same data must give the same top-k
    # Qdrant and pgvector compute distances in float32 in different orders (and Qdrant
    # normalises cosine vectors, float16 vectors are summed from halves): scores of the same
    # point agree to ~1e-6 relative on float32; 1e-3 leaves room for float16.
    score_tolerance: float = 1e-3  # |pgvector score - Qdrant score| / max(1, |score|)
    payload_ulps: int = 2  # payload floats this close are reported apart (Qdrant Edge), not failed


THRESHOLD_NAMES = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(Thresholds)}


def parse_thresholds(values: Iterable[str] | None) -> Thresholds:
    """``recall-mean=0.9,top1=0.8`` items, repeatable and/or comma-separated."""
    changes: dict[str, Any] = {}
    for raw in values or ():
        for item in raw.replace(";", ",").split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            attr = THRESHOLD_NAMES.get(name.strip().lower().replace("_", "-"))
            if not sep or attr is None:
                raise InputError(f"--verify.threshold {item!r} is not name=value with a known name.",
                                 fix=f"names are: {', '.join(THRESHOLD_NAMES)}; e.g. --verify.threshold "
                                     "recall-mean=0.9,top1=0.8.")
            kind = type(getattr(Thresholds(), attr))
            try:
                number = kind(value.strip())
            except ValueError:
                raise InputError(f"--verify.threshold {item!r}: {value.strip()!r} is not a{'n integer' if kind is int else ' number'}.",
                                 fix=f"e.g. --verify.threshold {name.strip()}={getattr(Thresholds(), attr)}.") from None
            if number < 0 or not math.isfinite(number):
                raise InputError(f"--verify.threshold {item!r} must be a non-negative number.",
                                 fix=f"e.g. --verify.threshold {name.strip()}={getattr(Thresholds(), attr)}.")
            changes[attr] = number
    return dataclasses.replace(Thresholds(), **changes)


def parse_sample(text: str | None) -> tuple[str, float] | None:
    """``N`` rows or ``P%`` of the table; None for the default rule."""
    if text is None or not str(text).strip():
        return None
    t = str(text).strip()
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if 0 <= pct <= 100:
                return "percent", pct
        else:
            n = int(t)
            if n >= 0:
                return "rows", n
    except ValueError:
        pass
    raise InputError(f"--verify.sample {t!r} is neither a row count nor a percentage.",
                     fix="give rows (--verify.sample 5000) or a share of the table (--verify.sample 2%).")


def sample_size(text: str | None, total: int) -> tuple[int, str]:
    """Rows the values check compares, and the rule that chose that number."""
    spec = parse_sample(text)
    if spec is None:
        if total < SAMPLE_ALL_BELOW:
            return total, "all rows (the table has under 100,000)"
        return min(total, max(SAMPLE_MIN_ROWS, math.ceil(total * SAMPLE_FRACTION))), "max(1,000 rows, 1%)"
    kind, value = spec
    if kind == "percent":
        return min(total, math.ceil(total * value / 100)), f"{value:g}% (--verify.sample)"
    return min(total, int(value)), f"{int(value):,} rows (--verify.sample)"


@dataclass
class VerifyOptions:
    sample: str | None = None  # N | P% | None (default rule)
    queries: int = DEFAULT_QUERIES
    k: int = DEFAULT_K
    report: str | None = None  # .json | .md | .html
    queries_file: str | None = None
    vectors: list[str] = field(default_factory=list)  # named vectors to search (default: all searchable)
    thresholds: Thresholds = field(default_factory=Thresholds)
    index_timeout_s: float = INDEX_TIMEOUT_S
    seed: int | None = None  # sampling seed (random and reported when not given)
    id_memory_mb: int = ID_MEMORY_MB

    def validate(self) -> None:
        parse_sample(self.sample)
        if self.queries < 0:
            raise InputError(f"--verify.queries must not be negative (got {self.queries}).",
                             fix=f"use e.g. --verify.queries {DEFAULT_QUERIES} (0 skips search parity).")
        if self.k <= 0:
            raise InputError(f"--verify.k must be positive (got {self.k}).", fix=f"use e.g. --verify.k {DEFAULT_K}.")
        if self.index_timeout_s < 0:
            raise InputError("--verify.index-timeout must not be negative.", fix="give seconds, e.g. 300.")
        if self.id_memory_mb <= 0:
            raise InputError("--verify.id-memory must be positive.", fix=f"give MiB, e.g. {ID_MEMORY_MB}.")
        if self.report:
            report_format(self.report)
        if self.queries_file and not Path(self.queries_file).is_file():
            raise InputError(f"--verify.queries-file {self.queries_file!r} does not exist.",
                             fix="give a .json, .jsonl or .npy file of query vectors.")

    def settings(self, seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": self.sample or "default", "queries": self.queries, "k": self.k,
                               "seed": seed}
        if self.queries_file:
            out["queries file"] = self.queries_file
        changed = {k: v for k, v in dataclasses.asdict(self.thresholds).items()
                   if v != getattr(Thresholds(), k)}
        if changed:
            out["thresholds changed"] = changed
        return out
