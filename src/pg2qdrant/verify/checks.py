"""The five checks (:class:`Verification`; the sixth, keyword search, in :mod:`.keywords`) and the entry
point :func:`run_verify`.

The orchestration: opens the snapshot and the target, runs the checks in order on
top of :mod:`.compare`, :mod:`.source_rows`, :mod:`.ids` and :mod:`.search`, and turns
their results into :class:`~pg2qdrant.verify.report.CheckResult` findings and a report.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pg2qdrant.core.errors import InputError, Pg2QdrantError
from pg2qdrant.core.mapping.batch import PointBatch
from pg2qdrant.core.mapping.ids import make_point_id, normalize_point_id
from pg2qdrant.core.plan import Bm25Spec, CollectionShape, Plan, VectorSpec, check_shape, vector_label
from pg2qdrant.runtime.ids import BYTES_PER_ROW, EXAMPLES_KEPT, IdScan, scan_ids
from pg2qdrant.runtime.session import open_source
from pg2qdrant.runtime.target import connect_target
from pg2qdrant.source import search as pg_search
from pg2qdrant.source.connect import Connection
from pg2qdrant.verify.compare import Mismatch, _short, compare_points, same_json
from pg2qdrant.verify.keywords import KeywordCheck
from pg2qdrant.verify.options import INDEX_POLL_S, RETRIEVE_BATCH, VerifyOptions, sample_size
from pg2qdrant.verify.report import FAIL, PASS, SKIP, WARN, CheckResult, Report, render_summary, worst, write_report
from pg2qdrant.verify.search import HAMMING, PG_OPERATORS, ParityStats, QueryReservoir, load_queries_file, qdrant_score
from pg2qdrant.verify.source_rows import iter_source_batches

# ---------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------

def _finding(pid: Any, field_name: str, reason: str, message: str, expected: Any = "", actual: Any = "") -> dict:
    return {"id": normalize_point_id(pid), "field": field_name, "reason": reason, "message": message,
            "expected": _shown(expected), "actual": _shown(actual)}


def _shown(value: Any) -> str:
    """A value for the findings table: repr (so "1" and 1 differ), markers and vector excerpts as they are."""
    if isinstance(value, str) and (value in ("", "<absent>", "present", "missing") or value.startswith("[")):
        return value
    return _short(value)


def _brief(m: Mismatch) -> str:
    return f"point {m.point_id!r}: {m.field}: {m.reason}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _mismatch_finding(m: Mismatch) -> dict:
    return _finding(m.point_id, m.field, m.reason, m.describe(), m.expected, m.actual)


def _reasons(why: list[str]) -> str:
    return " [" + "; ".join(why) + "]" if why else ""


@dataclass
class _ValueTally:
    """The values check's count of the differences found, and the first few of each kind."""

    ulps: int  # payload floats this close to the source are counted apart (--verify.threshold payload-ulps)
    compared: int = 0  # sampled rows that have a point
    absent: int = 0  # sampled rows without a point: the IDs check reports them (with their partition)
    ulp: int = 0
    real: list[Mismatch] = field(default_factory=list)
    ulp_examples: list[Mismatch] = field(default_factory=list)
    rows_bad: set[Any] = field(default_factory=set)
    by_field: Counter[str] = field(default_factory=Counter)

    def add(self, mismatches: Iterable[Mismatch], *, rows: int) -> None:
        absent = 0
        for m in mismatches:
            if m.field == "point":  # no point at all
                absent += 1
            elif is_ulp_level(m, self.ulps):
                self.ulp += 1
                _keep(self.ulp_examples, m)
            else:
                self.rows_bad.add(normalize_point_id(m.point_id))
                self.by_field[m.field] += 1
                _keep(self.real, m)
        self.absent += absent
        self.compared += rows - absent


def _keep(examples: list[Mismatch], m: Mismatch) -> None:
    if len(examples) < EXAMPLES_KEPT:
        examples.append(m)


@dataclass
class _ParityReport:
    """What the search parity check gathers, vector by vector."""

    plots: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    same_as_exact: list[str] = field(default_factory=list)

    def add(self, verdict: str, line: str) -> None:
        self.verdicts.append(verdict)
        self.lines.append(line)


def is_ulp_level(m: Mismatch, ulps: int) -> bool:
    """A payload float that differs only by a few units in the last place (Qdrant Edge re-parsing)."""
    if ulps <= 0 or m.field == "point" or m.field.startswith("vector:") or "ULP" not in m.reason:
        return False
    return same_json(m.expected, m.actual, float_ulps=ulps) is None


class Verification:
    """The five checks on one source session (snapshot) and one target collection."""

    def __init__(self, session, target, target_display: str, is_local_mode: bool, opts: VerifyOptions, ui):
        self.conn: Connection = session.conn
        self.plan: Plan = session.plan
        self.target = target
        self.target_display = target_display
        self.is_local_mode = is_local_mode
        self.opts = opts
        self.t = opts.thresholds
        self.ui = ui
        self.collection = self.plan.collection
        self.seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)

    # -- orchestration --------------------------------------------------------------------
    def run(self) -> Report:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        clock = time.monotonic()
        shape = self.target.shape(self.collection)
        if shape is None:
            raise InputError(f"Collection {self.collection!r} does not exist at {self.target_display}.",
                             fix="run pg2qdrant migrate first, or check --qdrant.url and --qdrant.collection.")
        report = Report(self.plan.table.display, self.target_display, self.collection, started,
                        self.opts.settings(self.seed), notes=list(self.plan.warnings))
        searched = self._searched_specs()  # input errors (vector names, query file) before the long scans
        file_queries = load_queries_file(self.opts.queries_file, searched) if self.opts.queries_file else None
        schema = self._timed(lambda: self.check_schema(shape))
        scan_started = time.monotonic()
        target_count = self.target.count(self.collection)
        with self.ui.progress(max(self.plan.table.estimated_rows, 0) or None, "Checking IDs") as progress:
            scan = scan_ids(self.conn, self.plan, self.target, self.collection, memory_mb=self.opts.id_memory_mb,
                            expected_points=target_count, progress=progress)
        counts = self.check_counts(scan, target_count)
        ids = self.check_ids(scan)
        ids.seconds = time.monotonic() - scan_started  # one scan serves both (counts: no time of its own)
        reservoir = QueryReservoir([s.name for s in searched] if file_queries is None else [],
                                   self.opts.queries, self.rng)
        values = self._timed(lambda: self.check_values(scan.source_rows, reservoir))
        search = self._timed(lambda: self.check_search(shape, searched, file_queries or reservoir.kept))
        report.checks = [counts, ids, values, schema, search]
        if self.plan.bm25:  # 6: keyword search, informational
            report.checks.append(self._timed(lambda: KeywordCheck(self, self._searched_bm25()).run()))
        report.seconds = time.monotonic() - clock
        return report

    @staticmethod
    def _timed(fn) -> CheckResult:
        start = time.monotonic()
        result = fn()
        result.seconds = time.monotonic() - start
        return result

    # -- 4. schema --------------------------------------------------------------------------
    def check_schema(self, shape: CollectionShape) -> CheckResult:
        check = check_shape(self.plan.collection_spec(), shape)
        expected, diffs = check.expected, check.differences
        figures = {"plan": expected.describe(), "collection": shape.describe()}
        if diffs:
            findings = [_finding("(collection)", _vector_field(d), "schema differs", d) for d in diffs]
            return CheckResult(4, "Schema", FAIL, "the collection does not match the plan: " + "; ".join(diffs),
                               details=[f"the table needs: {expected.describe()}",
                                        f"the collection has: {shape.describe()}"],
                               figures=figures, mismatches=findings)
        return CheckResult(4, "Schema", PASS, f"vectors match the plan: {expected.describe()}", figures=figures,
                           details=[f"{vector_label(v.name)}: {v.declared} -> {_vector_shape(v)} (distance from "
                                    f"{v.distance_source})" for v in self.plan.vectors])

    # -- 1. counts ----------------------------------------------------------------------------
    def check_counts(self, scan: IdScan, target_count: int) -> CheckResult:
        rows = scan.source_rows
        partitioned = len(scan.leaf_names) > 1
        figures: dict[str, Any] = {"source rows": rows, "points in the collection": target_count}
        details = []
        if partitioned:
            figures["rows per leaf relation"] = dict(zip(scan.leaf_names, scan.leaf_rows))
            details = [f"{name}: {n:,} rows" + (f", {m:,} without a point" if m else "")
                       for name, n, m in zip(scan.leaf_names, scan.leaf_rows, scan.missing_by_leaf)]
        where = f" in {len(scan.leaf_names)} partitions/children" if partitioned else ""
        if rows == target_count:
            return CheckResult(1, "Counts", PASS, f"{rows:,} source rows{where} = {target_count:,} points",
                               details=details, figures=figures)
        diff = target_count - rows
        return CheckResult(1, "Counts", FAIL,
                           f"{rows:,} source rows{where} but {target_count:,} points in the collection "
                           f"({abs(diff):,} {'more' if diff > 0 else 'fewer'})", details=details, figures=figures)

    # -- 2. IDs -------------------------------------------------------------------------------
    def check_ids(self, scan: IdScan) -> CheckResult:
        findings = []
        for what, pid, leaf in scan.examples:
            if what == "missing":
                findings.append(_finding(pid, "point", "missing in the collection",
                                         f"point {pid!r}: missing in the collection (its row is in {leaf})"))
            elif what == "orphan":
                findings.append(_finding(pid, "point", "orphan: no source row maps to it",
                                         f"point {pid!r}: orphan, no source row maps to it"))
            else:
                findings.append(_finding(pid, "point", "several source rows map to this ID",
                                         f"point {pid!r}: several source rows of {leaf} map to this one ID"))
        mem = (f"IDs compared in {_plural(scan.passes, 'pass', 'hash-bucket passes')}, at most "
               f"{scan.peak_ids:,} IDs (source and target) in memory at once (at most "
               f"{scan.peak_ids / 2 * BYTES_PER_ROW / 2**20:,.1f} MiB; budget --verify.id-memory "
               f"{self.opts.id_memory_mb} MiB)")
        figures = {"source rows": scan.source_rows, "points scrolled": scan.target_points,
                   "missing points": scan.missing, "orphan points": scan.orphans,
                   "rows sharing an ID": scan.duplicate_rows, "passes": scan.passes}
        problems = []
        if scan.missing:
            problems.append(f"{_plural(scan.missing, 'source row has', 'source rows have')} no point (IDs "
                            f"{_examples(scan, 'missing')})")
        if scan.orphans:
            problems.append(f"{_plural(scan.orphans, 'point matches', 'points match')} no source row "
                            f"(orphans: {_examples(scan, 'orphan')})")
        if scan.duplicate_rows:
            problems.append(f"{_plural(scan.duplicate_rows, 'row maps', 'rows map')} onto an ID another row "
                            f"already uses (IDs {_examples(scan, 'duplicate')})")
        if problems:
            return CheckResult(2, "IDs", FAIL, "; ".join(problems), details=[mem], figures=figures,
                               mismatches=findings)
        return CheckResult(2, "IDs", PASS, f"every one of the {scan.source_rows:,} source rows has its point, "
                                           "and no other point is in the collection",
                           details=[mem], figures=figures)

    # -- 3. values ----------------------------------------------------------------------------
    def check_values(self, total: int, reservoir: QueryReservoir) -> CheckResult:
        n, rule = sample_size(self.opts.sample, total)
        if n == 0:
            self._fill_reservoir(reservoir, total)
            return CheckResult(3, "Values", SKIP, "no row sampled" + (" (empty table)" if total == 0 else
                                                                      " (--verify.sample 0)"))
        ulps = self.t.payload_ulps
        tally = _ValueTally(ulps)
        with self.ui.progress(n if n >= total else None, "Comparing sampled rows") as progress:
            for batch in self._sample(n, total):
                reservoir.offer(batch)
                records = self.target.retrieve(self.collection, list(batch.ids), with_vectors=True)
                tally.add(compare_points(self.plan, batch, records), rows=len(batch))
                progress.advance(len(batch))
        compared, ulp, absent = tally.compared, tally.ulp, tally.absent
        real, ulp_examples, rows_bad, by_field = tally.real, tally.ulp_examples, tally.rows_bad, tally.by_field
        fields = len(self.plan.payload) + len(self.plan.vectors)
        sampled = f"{compared:,} rows sampled ({rule}; seed {self.seed})" if compared + absent < total else \
            f"all {compared:,} rows"
        figures = {"rows compared": compared, "fields per row": fields, "rows with a difference": len(rows_bad),
                   "differences": sum(by_field.values()), "payload floats within "
                   f"{ulps} ULP": ulp, "differences per field": dict(by_field.most_common())}
        details = [f"compared: every payload field's value and JSON type (null kept, int stays int) and every "
                   f"vector ({_vector_rules(self.plan)})"]
        if absent:
            details.append(f"{_plural(absent, 'sampled row has', 'sampled rows have')} no point in the collection: "
                           "not compared here, the IDs check reports them")
            figures["sampled rows without a point"] = absent
        if compared == 0:
            return CheckResult(3, "Values", SKIP, "no sampled row has a point to compare (see the IDs check)",
                               details=details, figures=figures)
        if ulp:
            details.append(f"{ulp:,} payload float(s) differ from the source by at most {ulps} ULP (units in the "
                           "last place), e.g. " + "; ".join(m.describe() for m in ulp_examples[:3]) +
                           ". Qdrant Edge re-parses payload floats inexactly (see docs/targets.md, known target "
                           "limitations); set --verify.threshold payload-ulps=0 to count them as failures.")
        findings = [_mismatch_finding(m) for m in real] + [
            {**_mismatch_finding(m), "reason": f"ULP-level: {m.reason}"} for m in ulp_examples[:5]]
        if real:
            what = ", ".join(f"{f} ({c})" for f, c in by_field.most_common(5))
            return CheckResult(3, "Values", FAIL,
                               f"{_plural(sum(by_field.values()), 'difference', 'differences')} in "
                               f"{len(rows_bad):,} of {sampled}: {what}; e.g. {_brief(real[0])}",
                               details=details, figures=figures, mismatches=findings)
        if ulp:
            return CheckResult(3, "Values", WARN, f"{sampled} equal, except "
                                                  f"{_plural(ulp, 'payload float', 'payload floats')} within "
                                                  f"{ulps} ULP (e.g. {_brief(ulp_examples[0])})",
                               details=details, figures=figures, mismatches=findings)
        return CheckResult(3, "Values", PASS, f"{sampled}: every payload field and vector equal",
                           details=details, figures=figures)

    def _sample(self, n: int, total: int) -> Iterator[PointBatch]:
        """About ``n`` rows (at least n, almost surely), each kept with the same probability
        (reproducible with the seed), or all rows.

        No LIMIT: cutting an oversampled scan at n would drop the rows stored last (often the
        newest, which a migration is most likely to have missed); the sample is a little larger
        instead (Bernoulli counts are binomial: +3 standard deviations).
        """
        if n >= total:
            yield from iter_source_batches(self.conn, self.plan, batch_rows=RETRIEVE_BATCH)
            return
        pct = min(100.0, 100.0 * (n + 3 * math.sqrt(n)) / total)
        yield from iter_source_batches(self.conn, self.plan, sample_percent=pct, seed=self.seed,
                                       batch_rows=RETRIEVE_BATCH)

    def _fill_reservoir(self, reservoir: QueryReservoir, total: int) -> None:
        """Query vectors when the values check sampled nothing."""
        if reservoir.n and total:
            for batch in self._sample(min(total, max(4 * reservoir.n, 200)), total):
                reservoir.offer(batch)

    # -- 5. search parity -------------------------------------------------------------------
    def _searched_specs(self) -> list[VectorSpec]:
        names = [v.name for v in self.plan.vectors] + [b.name for b in self.plan.bm25]
        unknown = [n for n in self.opts.vectors if n not in names]
        if unknown:
            raise InputError(f"--verify.vector names {', '.join(map(repr, unknown))}, not a migrated vector.",
                             fix=f"vectors: {', '.join(names)}.")
        return [v for v in self.plan.vectors if not self.opts.vectors or v.name in self.opts.vectors]

    def _searched_bm25(self) -> list[Bm25Spec]:
        """The BM25 vectors the keyword check queries: all, or those --verify.vector names."""
        return [b for b in self.plan.bm25 if not self.opts.vectors or b.name in self.opts.vectors]

    def check_search(self, shape: CollectionShape, searched: Sequence[VectorSpec],
                     queries_by_vector: dict[str, list[tuple[Any, Any]]]) -> CheckResult:
        """``queries_by_vector``: (label, vector) per named vector, from the table or a file."""
        if self.opts.queries == 0 and not self.opts.queries_file:
            return CheckResult(5, "Search parity", SKIP, "not measured (--verify.queries 0)")
        hnsw, hnsw_ready, hnsw_note = self._hnsw_state()
        out = _ParityReport(plots={"k": self.opts.k, "vectors": {}})
        if hnsw_note:
            out.details.append(hnsw_note)
        for spec in searched:
            if spec.name in queries_by_vector:
                self._search_vector(spec, shape, queries_by_vector[spec.name], hnsw, hnsw_ready, out)
        if out.same_as_exact:
            out.details.append(f"{', '.join(out.same_as_exact)}: HNSW search returned exactly the exact-search "
                               "results for every query: on a small collection (which Qdrant may search "
                               "exhaustively) this says little about the index itself")
        out.details.append("pgvector searched exactly (index scans disabled, in the verification's snapshot); "
                           "a Qdrant point tied with pgvector's k-th score counts as found")
        return CheckResult(5, "Search parity", worst(out.verdicts) if out.verdicts else SKIP,
                           "; ".join(out.lines) or "no vector to search", details=out.details,
                           figures=out.figures, mismatches=out.findings, plots=out.plots)

    def _search_vector(self, spec: VectorSpec, shape: CollectionShape, queries: list[tuple[Any, Any]], hnsw: bool,
                       hnsw_ready: bool, out: _ParityReport) -> None:
        """Search parity of one vector: its verdicts, line, figures and worst queries, into ``out``."""
        why_not = self._unsearchable(spec, shape)
        if why_not:
            out.add(why_not[0], f"{vector_label(spec.name)}: {why_not[1]}")
            return
        if not queries:
            out.add(SKIP, f"{vector_label(spec.name)}: no row has this vector, nothing to search")
            return
        try:
            exact, approx, index_used, hnsw_same = self._parity(spec, queries, hnsw)
        except Pg2QdrantError as exc:  # SourceError from pgvector's search, TargetError from Qdrant's
            out.add(FAIL, f"{vector_label(spec.name)}: search failed: {exc}")
            return
        if index_used:
            out.details.append(f"{vector_label(spec.name)}: pgvector's plan still used an index: its results may be "
                               "approximate")
        if hnsw_same:
            out.same_as_exact.append(vector_label(spec.name))
        distance = spec.distance or "Dot"
        conversion = (HAMMING if spec.kind == "bit" else PG_OPERATORS[distance])
        out.plots["vectors"][spec.name] = {
            "recall_exact": exact.recalls, "recall_hnsw": approx.recalls if approx else [],
            "scores_exact": exact.score_pairs, "scores_hnsw": approx.score_pairs if approx else [],
            "conversion": f"{conversion[0]}: {conversion[1]}"}
        text = (f"{vector_label(spec.name)} ({len(exact.recalls)} queries, {distance}, pgvector {conversion[0]}): "
                + self._judge_parity(spec, exact, approx, hnsw_ready, out))
        if len(exact.recalls) < self.t.tier2_queries:
            out.details.append(f"{vector_label(spec.name)}: {len(exact.recalls)} queries: tier 2 thresholds (recall "
                               f"distribution, Spearman) need {self.t.tier2_queries}; only tier 1 was judged")
        out.lines.append(text)
        from_file = bool(self.opts.queries_file)
        for stats in (exact, approx):
            for _recall, label, what in sorted((stats.worst if stats else []), key=lambda w: w[0])[:5]:
                query = label if from_file else f"vector of point {label!r}"
                out.findings.append(_finding(label, f"vector:{vector_label(spec.name)} ({stats.mode} search)", what,
                                             f"query = {query}, {vector_label(spec.name)}, {stats.mode} search: {what}"))

    def _judge_parity(self, spec: VectorSpec, exact: ParityStats, approx: ParityStats | None, hnsw_ready: bool,
                      out: _ParityReport) -> str:
        """Verdicts and figures of exact and (where measured) HNSW search; their text for the summary line.

        HNSW measured before Qdrant's index was ready can at best warn."""
        k = self.opts.k
        v_exact, why_exact = exact.judge(self.t, exact=True)
        out.verdicts.append(v_exact)
        out.figures[spec.name] = {"exact": exact.figures()}
        text = f"exact recall@{k} {np.mean(exact.recalls):.3f}, top-1 {np.mean(exact.top1):.0%}" + _reasons(why_exact)
        if approx is None:
            return text + ("; HNSW not measured (local mode)" if self.is_local_mode else "; HNSW not measured")
        v_hnsw, why_hnsw = approx.judge(self.t, exact=False)
        out.verdicts.append(v_hnsw if hnsw_ready else worst([v_hnsw, WARN]))
        out.figures[spec.name]["HNSW"] = approx.figures()
        return (text + f"; HNSW recall@{k} {np.mean(approx.recalls):.3f}, top-1 {np.mean(approx.top1):.0%}"
                + _reasons(why_hnsw))

    def _unsearchable(self, spec: VectorSpec, shape: CollectionShape) -> tuple[str, str] | None:
        if spec.is_sparse:
            if spec.name not in shape.sparse:
                return FAIL, "not searched: the collection has no such sparse vector"
            if self._sparse_dim(spec) is None:
                return SKIP, "not searched: sparsevec declared without a dimension"
            return None
        if spec.name not in shape.dense:
            return FAIL, "not searched: the collection has no such vector"
        if shape.dense[spec.name][0] != spec.size:
            return FAIL, (f"not searched: the collection's vector has size {shape.dense[spec.name][0]}, "
                          f"the table's {spec.size}")
        if spec.kind == "bit" and spec.distance != "Manhattan":
            return SKIP, f"not searched: pgvector has no {spec.distance} operator for bit vectors"
        return None

    def _sparse_dim(self, spec: VectorSpec) -> int | None:
        col = self.plan.table.column(spec.column)
        return col.typmod if col is not None and col.typmod > 0 else None

    def _hnsw_state(self) -> tuple[bool, bool, str]:
        """(HNSW search measured, index finished, what to say), after waiting for the optimizer."""
        if self.is_local_mode:
            return False, False, ("qdrant-client local mode has no HNSW index: its searches are always exhaustive, "
                           "so only exact parity is measured (HNSW recall needs a Qdrant server or edge:)")
        deadline = time.monotonic() + self.opts.index_timeout_s
        indexed, points, idle = self.target.index_status(self.collection)
        while not idle and time.monotonic() < deadline:
            time.sleep(INDEX_POLL_S)
            indexed, points, idle = self.target.index_status(self.collection)
        if not idle:
            return True, False, (f"Qdrant was still building the index after {self.opts.index_timeout_s:g} s "
                          f"({indexed:,} vectors indexed, {points:,} points): HNSW figures may be inflated by "
                          "exhaustive search of unindexed segments")
        if indexed == 0:
            return True, True, ("no vector is indexed (HNSW disabled with m=0, or segments below the indexing "
                          "threshold): Qdrant's 'HNSW' searches are exhaustive, so they equal exact search")
        return True, True, f"index ready: {indexed:,} vectors indexed for {points:,} points"

    # complexity: search parity per vector: queries from both sides, exact and HNSW, skips and waits for indexing,
    # each with its verdict.
    def _parity(self, spec: VectorSpec, queries: Sequence[tuple[Any, Any]], hnsw: bool
                ) -> tuple[ParityStats, ParityStats | None, bool, bool]:
        """(exact stats, HNSW stats, pgvector used an index, HNSW gave the exact results every time)."""
        distance = spec.distance or "Dot"
        tol = self.t.score_tolerance
        exact, approx = ParityStats("exact"), (ParityStats("HNSW") if hnsw else None)
        search_sql = self._pg_search_sql(spec)
        index_used = False
        hnsw_same_as_exact = True
        with pg_search.exact_scans(self.conn):
            with self.ui.progress(len(queries), f"Searching {vector_label(spec.name)} on both sides",
                                  unit="queries") as progress:
                for i, (label, vector) in enumerate(queries):
                    literal = self._pg_literal(spec, vector)
                    if i == 0:
                        index_used = self._pg_uses_index(search_sql, literal)
                    # NaN distances (a zero vector under cosine) have no rank on either side.
                    expected = [(normalize_point_id(pid), qdrant_score(distance, d))
                                for pid, d in self._pg_top_k(search_sql, literal) if math.isfinite(d)]
                    if spec.is_sparse:
                        # Qdrant's sparse search returns only points sharing an index with the
                        # query; pgvector pads its top-k with unrelated rows scoring 0.
                        expected = [(pid, score) for pid, score in expected if score != 0]
                    if not expected:
                        progress.advance(1)
                        continue
                    query = vector if spec.is_sparse else np.asarray(vector, dtype=np.float32)
                    ids_by_mode = []
                    for stats, is_exact in ((exact, True), (approx, False)):
                        if stats is None:
                            continue
                        found = [(normalize_point_id(pid), float(s)) for pid, s in self.target.search(
                            self.collection, spec.name, query, self.opts.k, exact=is_exact)]
                        stats.add(normalize_point_id(label), expected, found, tol=tol)
                        ids_by_mode.append([pid for pid, _ in found])
                    hnsw_same_as_exact = hnsw_same_as_exact and ids_by_mode[0] == ids_by_mode[-1]
                    progress.advance(1)
        return exact, approx, index_used, bool(approx is not None and approx.recalls and hnsw_same_as_exact)

    def _pg_search_sql(self, spec: VectorSpec) -> pg_search.ExactSearch:
        """pgvector's exact search for ``spec``: its operator, the query cast to the column's type."""
        if spec.is_sparse:
            op, cast, bits = "<#>", (None, "sparsevec"), None
        elif spec.kind == "bit":
            op, cast, bits = HAMMING[0], None, spec.size
        else:
            col = self.plan.table.column(spec.column)
            op, cast, bits = PG_OPERATORS[spec.distance or "Cosine"][0], (col.type.schema, col.type.name), None
        return pg_search.ExactSearch(self.conn, self.plan, spec.read_index, op, self.opts.k, cast_type=cast,
                                     bits=bits)

    def _pg_literal(self, spec: VectorSpec, vector: Any) -> str:
        if spec.is_sparse:
            parts = ",".join(f"{int(i) + 1}:{float(v)!r}" for i, v in zip(vector.indices, vector.values))
            return f"{{{parts}}}/{self._sparse_dim(spec)}"
        if spec.kind == "bit":
            return "".join("1" if x else "0" for x in np.asarray(vector))
        return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"

    def _pg_top_k(self, search: pg_search.ExactSearch, literal: str) -> list[tuple[Any, float]]:
        return [(make_point_id(self.plan.key, keys), d) for keys, d in search.top_k(literal)]

    def _pg_uses_index(self, search: pg_search.ExactSearch, literal: str) -> bool:
        return search.uses_index(literal)


def _examples(scan: IdScan, what: str) -> str:
    ids = [repr(pid) for kind, pid, _ in scan.examples if kind == what]
    total = {"missing": scan.missing, "orphan": scan.orphans, "duplicate": scan.duplicate_rows}[what]
    return ", ".join(ids[:5]) + (", ..." if total > 5 else "")


def _vector_field(diff: str) -> str:
    start = diff.find("'")
    end = diff.find("'", start + 1)
    return f"vector:{diff[start + 1:end]}" if start >= 0 and end > start else "vectors"


def _vector_shape(v: VectorSpec) -> str:
    return "sparse" if v.is_sparse else f"{v.size}-d {v.distance} {v.datatype}"


def _vector_rules(plan: Plan) -> str:
    rules = {"dense": "float32 bit-exact", "half": "float16 precision", "sparse": "exact", "bit": "exact"}
    out = []
    for v in plan.vectors:
        rule = rules[v.kind]
        if v.distance == "Cosine" and v.kind in ("dense", "half"):
            rule = "normalised, atol 1e-6" if v.kind == "dense" else "normalised, float16 precision"
        out.append(f"{vector_label(v.name)}: {rule}")
    return ", ".join(out)


# ---------------------------------------------------------------------------------------
# Entry point for `pg2qdrant verify` and `migrate --verify`
# ---------------------------------------------------------------------------------------

def run_verify(options, verify_options: VerifyOptions, ui, *, session=None) -> Report:
    """Run the five checks, print the summary, write the report file; return the report.

    ``options`` are the migrate options (same plan, same mapping). With ``session``
    (an open :class:`~pg2qdrant.runtime.session.SourceSession`, e.g. the copy's own snapshot) it is used
    and left open; otherwise one is opened and closed here. Input problems raise
    InputError (exit 2); the caller exits with ``report.exit_code`` (0 pass, 1 fail).
    """
    from pg2qdrant.destination.address import parse_target_url

    started = time.monotonic()
    verify_options.validate()
    address = parse_target_url(options.qdrant_url)
    own = session is None
    if own:
        session = open_source(options, ui, count=False)  # the ID scan counts per partition
    target = None
    try:
        target = connect_target(options, address, ui)
        report = Verification(session, target, address.display(), not target.capabilities.hnsw,
                              verify_options, ui).run()
        report.seconds = time.monotonic() - started
    finally:
        if target is not None:
            target.close()
        if own:
            session.close()
    render_summary(ui, report)
    if verify_options.report:
        write_report(report, verify_options.report)
        ui.info(f"Report written to {verify_options.report}")
    return report
