"""Check 6, keyword search: PostgreSQL's full-text ranking against Qdrant's BM25 (``--qdrant.bm25``).

For keyword queries picked from sampled rows' text, the top-k of PostgreSQL's ``ts_rank_cd``
(the table's own tsvector column for that text where it has one, else ``to_tsvector``) is
compared with Qdrant's top-k by the BM25 sparse vector: overlap at k per BM25 vector. The two
rankings are not expected to be identical, so the figure is informational and never fails
verify; a query Qdrant answers with nothing at all is a warning (see :func:`_query`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.core.errors import Pg2QdrantError
from pg2qdrant.core.mapping.ids import make_point_id, normalize_point_id
from pg2qdrant.core.plan import Bm25Spec, Plan, vector_label
from pg2qdrant.source import search as pg_search
from pg2qdrant.verify.report import PASS, SKIP, WARN, CheckResult, worst

NUMBER, NAME = 6, "Keyword search"
MAX_WORDS = 3  # a query is 1 to 3 of a sampled row's words
WHY_DIFFERENT = ("not expected to be identical: PostgreSQL's parser, stemmer and stopwords differ from Qdrant's "
                 "BM25 tokenizer; ts_rank_cd ranks by term frequency and proximity without IDF, BM25 weighs each "
                 "term by its IDF over the collection and normalises by document length; plainto_tsquery needs "
                 "every word of the query, BM25 scores a document holding any of them")


@dataclass
class _Tally:
    overlaps: list[float] = field(default_factory=list)
    no_token: int = 0  # Qdrant's BM25 keeps no token of the query (its stopwords): nothing to compare
    no_match: int = 0  # PostgreSQL's tsquery matches no row (its stopwords, or stems that differ)
    empty: list[str] = field(default_factory=list)  # queries PostgreSQL answers and Qdrant does not at all


def pick_queries(word_lists: Sequence[list[str]], n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` queries of 1 to MAX_WORDS distinct words, each from one text's kept words."""
    queries = []
    for words in word_lists:
        distinct = list(dict.fromkeys(w.lower() for w in words))  # first-seen order: reproducible with the seed
        if distinct and len(queries) < n:
            queries.append(" ".join(rng.sample(distinct, rng.randint(1, min(MAX_WORDS, len(distinct))))))
    return queries


def overlap_at_k(expected: Sequence[Any], found: Sequence[Any], k: int) -> float | None:
    """Share of Qdrant's top-k that PostgreSQL ranks in its top k, out of as many as PostgreSQL matched (up
    to k). ``expected`` holds PostgreSQL's top k with every row tied with the k-th: of equally ranked rows
    either side may return any, so each of them counts (texts that tie everywhere would else read 0)."""
    if not expected:
        return None
    return len(set(expected) & set(list(found)[:k])) / min(k, len(expected))


class KeywordCheck:
    """Check 6 on one source snapshot and one collection (``verification`` gives both, and the options)."""

    def __init__(self, verification, specs: Sequence[Bm25Spec]):
        self.v = verification
        self.plan: Plan = verification.plan
        self.specs = specs
        self.k = verification.opts.k

    def run(self) -> CheckResult:
        if self.v.opts.queries == 0:
            return CheckResult(NUMBER, NAME, SKIP, "not measured (--verify.queries 0)")
        if not self.specs:
            return CheckResult(NUMBER, NAME, SKIP, "no BM25 vector among --verify.vector")
        verdicts, lines, details, figures, findings = [], [], [], {}, []
        for spec in self.specs:
            label = vector_label(spec.name)
            try:
                source, tally = self._measure(spec)
            except Pg2QdrantError as exc:  # SourceError from PostgreSQL, TargetError from Qdrant: informational
                verdicts.append(WARN)
                lines.append(f"{label}: not measured: {exc}")
                continue
            figures[spec.name] = _figures(source, tally, self.k)
            if not tally.overlaps:
                verdicts.append(SKIP)
                lines.append(f"{label}: no keyword query to compare (no sampled text has a word both sides keep)")
                continue
            mean, low = sum(tally.overlaps) / len(tally.overlaps), min(tally.overlaps)
            lines.append(f"{label}: overlap@{self.k} mean {mean:.3f}, min {low:.3f} over {len(tally.overlaps)} "
                         f"queries (PostgreSQL: {source})")
            verdicts.append(WARN if tally.empty else PASS)
            for query in tally.empty[:5]:
                findings.append({"id": query, "field": f"vector:{label}", "reason": "Qdrant found nothing",
                                 "message": f"keywords {query!r}: PostgreSQL ranks rows holding them, Qdrant's BM25 "
                                            f"search on {label} returns no point (missing or empty BM25 vectors?)",
                                 "expected": "", "actual": ""})
        details.append(f"informational (never fails verify): {WHY_DIFFERENT}")
        details.append(f"queries: 1 to {MAX_WORDS} words of a sampled row's text that PostgreSQL's parser keeps "
                       f"(seed {self.v.seed}); PostgreSQL: ts_rank_cd with plainto_tsquery, top {self.k} (rows tied with "
                       f"the {self.k}th each count); Qdrant: "
                       f"top {self.k} by the BM25 vector, query from Qdrant's BM25 embed_query with the same settings")
        if findings:
            details.append("a warning: PostgreSQL's top hit holds the keywords (the row they were taken from "
                           "matches too), so Qdrant's BM25 of that row shares a token with the query and must be "
                           "found unless its vector is missing or empty")
        return CheckResult(NUMBER, NAME, worst(verdicts) if verdicts else SKIP, "; ".join(lines), details=details,
                           figures=figures, mismatches=findings)

    def _measure(self, spec: Bm25Spec) -> tuple[str, _Tally]:
        from pg2qdrant.destination.bm25 import query_encoder

        conn = self.v.conn
        with pg_search.keyword_savepoint(conn):
            own = pg_search.tsvector_column(conn, self.plan.table, spec.column)
            if own is not None:
                tsvector, config = own
                source = f"column {tsvector}, {config}"
            else:
                tsvector, config = None, pg_search.text_search_config(conn, spec.options.language)
                source = f"to_tsvector('{config}', {spec.column})"
            texts = pg_search.sample_texts(conn, self.plan, spec.read_index, self.plan.table.estimated_rows, self.v.seed)
            rng = random.Random(f"{self.v.seed}:{spec.name}")
            rows = rng.sample(texts, min(len(texts), 2 * self.v.opts.queries))
            queries = pick_queries(pg_search.kept_words(conn, config, rows), self.v.opts.queries, rng)
            tops = pg_search.keyword_top_k(conn, self.plan, spec.read_index, tsvector, config, queries, self.k)
        encode = query_encoder(spec.options)
        tally = _Tally()
        with self.v.ui.progress(len(queries), f"Keyword queries on {vector_label(spec.name)}",
                                unit="queries") as progress:
            for query, top in zip(queries, tops):
                self._query(spec, query, top, encode, tally)
                progress.advance(1)
        return source, tally

    def _query(self, spec: Bm25Spec, query: str, top: list[tuple[tuple, float]], encode, tally: _Tally) -> None:
        """One query (``top``: PostgreSQL's answer) against Qdrant's, into ``tally``.

        The warning case: PostgreSQL ranks rows for the query and Qdrant's BM25 keeps a token of it,
        yet Qdrant returns no point at all. Its words were taken from a sampled row whose BM25 vector
        (same tokenizer) holds those tokens, and a sparse search returns every point sharing one, so an
        empty answer means missing or empty BM25 vectors, not a difference in ranking. (A query whose
        every word is a stopword to Qdrant's BM25 only is not compared: no_token.)"""
        vector = encode(query)
        if vector is None:
            tally.no_token += 1
            return
        expected = [normalize_point_id(make_point_id(self.plan.key, keys)) for keys, _ in top]
        if not expected:
            tally.no_match += 1
            return
        found = [normalize_point_id(pid) for pid, _ in self.v.target.search(
            self.v.collection, spec.name, vector, self.k, exact=False)]
        if not found:
            tally.empty.append(query)
        tally.overlaps.append(overlap_at_k(expected, found, self.k) or 0.0)


def _figures(source: str, tally: _Tally, k: int) -> dict[str, Any]:
    o = tally.overlaps
    return {"source": source, "k": k, "queries": len(o), "overlap mean": sum(o) / len(o) if o else None,
            "overlap min": min(o) if o else None, "queries without a BM25 token": tally.no_token,
            "queries PostgreSQL matched no row": tally.no_match, "queries Qdrant found nothing": len(tally.empty)}
