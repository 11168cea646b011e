"""The flags of verify and sync, and the options built from them.

Their own commands take them, and so do ``migrate --verify`` / ``migrate --then-sync`` and the
migration file: kept here so that no command module imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.cli.common import bool_flag, opt
from pg2qdrant.core.options import SYNC_MODES, SyncConfig, default_of
from pg2qdrant.runtime.ids import ID_MEMORY_MB
from pg2qdrant.verify.options import (
    DEFAULT_K,
    DEFAULT_QUERIES,
    INDEX_TIMEOUT_S,
    THRESHOLD_NAMES,
    Thresholds,
    VerifyOptions,
    parse_thresholds,
)


def _opt(name: str, dest: str, **kwargs) -> Callable:
    # Same environment-variable rule as cli.opt (PG2QDRANT_VERIFY_SAMPLE for --verify.sample);
    # not imported from cli because cli imports this module.
    env = "PG2QDRANT_" + name.lstrip("-").replace(".", "_").replace("-", "_").upper()
    return click.option(name, dest, envvar=env, **kwargs)


def verify_options(fn: Callable) -> Callable:
    """The --verify.* flags (for `verify`, and for `migrate --verify`)."""
    defaults = Thresholds()
    threshold_help = ", ".join(f"{name} ({getattr(defaults, attr):g})" for name, attr in THRESHOLD_NAMES.items())
    for decorator in reversed([
        _opt("--verify.sample", "verify_sample", metavar="N|P%",
             help="Rows compared field by field: a count or a percentage. Default: all rows under 100,000, "
                  "else max(1,000, 1%)."),
        _opt("--verify.queries", "verify_queries", type=int, default=DEFAULT_QUERIES, show_default=True,
             help="Query vectors sampled from the table for search parity, and keyword queries per BM25 vector "
                  "(0 = skip both)."),
        _opt("--verify.k", "verify_k", type=int, default=DEFAULT_K, show_default=True,
             help="Neighbours compared per query (recall@k)."),
        _opt("--verify.queries-file", "verify_queries_file", metavar="PATH",
             help="Query vectors instead of sampled rows: .npy (queries x dim), .json list (or {vector: list}), "
                  ".jsonl (one per line)."),
        _opt("--verify.vector", "verify_vector", multiple=True,
             help="Named vector(s) to search, BM25 vectors included, comma-separated or repeated (default: all)."),
        _opt("--verify.report", "verify_report", metavar="PATH",
             help="Write the report: .json, .md or .html (one self-contained file with plots)."),
        _opt("--verify.threshold", "verify_threshold", multiple=True, metavar="NAME=VALUE",
             help=f"Change a pass mark (repeat or comma-separate). Defaults (Qdrant's migration guide): "
                  f"{threshold_help}."),
        _opt("--verify.index-timeout", "verify_index_timeout", type=float, default=INDEX_TIMEOUT_S,
             show_default=True, help="Seconds to wait for Qdrant's index before measuring HNSW recall."),
        _opt("--verify.seed", "verify_seed", type=int, default=None,
             help="Seed of the row and query sample (default: random, printed in the report)."),
        _opt("--verify.id-memory", "verify_id_memory", type=int, default=ID_MEMORY_MB, show_default=True,
             help="MiB the ID check may hold; bigger tables are compared in several passes."),
    ]):
        fn = decorator(fn)
    return fn


def build_verify_options(kw: dict[str, Any]) -> VerifyOptions:
    """VerifyOptions from the parsed --verify.* flags (validated: InputError, exit 2)."""
    options = VerifyOptions(
        sample=kw["verify_sample"], queries=kw["verify_queries"], k=kw["verify_k"],
        report=kw["verify_report"], queries_file=kw["verify_queries_file"],
        vectors=[p.strip() for v in kw["verify_vector"] or () for p in v.split(",") if p.strip()],
        thresholds=parse_thresholds(kw["verify_threshold"]), index_timeout_s=kw["verify_index_timeout"],
        seed=kw["verify_seed"], id_memory_mb=kw["verify_id_memory"],
    )
    options.validate()
    return options




def sync_flags(fn: Callable) -> Callable:
    for decorator in reversed([
        opt("--sync.mode", "sync_mode", type=click.Choice(SYNC_MODES), default=default_of(SyncConfig, "mode"),
            show_default=True,
            help="cdc: logical replication; poll: rows whose --sync.updated-column advanced; reconcile: "
                 "one pass."),
        opt("--sync.slot", "sync_slot", default=None,
            help="Replication slot (default: pg2qdrant_<collection>)."),
        opt("--sync.publication", "sync_publication", default=None,
            help="Publication (default: pg2qdrant_<collection>; created if missing)."),
        bool_flag("--sync.initial-copy", "sync_initial_copy", False,
                  "Copy the table first, from the new slot's snapshot (no gap)."),
        opt("--sync.updated-column", "sync_updated_column", default=None,
            help="Poll: the timestamp/integer column every write advances."),
        opt("--sync.interval", "sync_interval", type=float, default=default_of(SyncConfig, "interval_s"), show_default=True,
            help="Poll: seconds between polls."),
        opt("--sync.overlap", "sync_overlap", type=float, default=default_of(SyncConfig, "overlap"), show_default=True,
            help="Poll: read again rows this far behind (late commits)."),
        bool_flag("--sync.reconcile", "sync_reconcile", False,
                  "Also fix missing and orphan points (cdc: at start; poll: often)."),
        opt("--sync.reconcile-interval", "sync_reconcile_interval", type=float,
            default=default_of(SyncConfig, "reconcile_interval_s"), show_default=True,
            help="Poll: seconds between reconciliations."),
        bool_flag("--sync.once", "sync_once", False,
                  "Stop once caught up with the start (poll: after one round)."),
    ]):
        fn = decorator(fn)
    return fn


def sync_options_from(kw: dict[str, Any]):
    from pg2qdrant.sync.options import SyncOptions
    return SyncOptions(
        mode=kw["sync_mode"], slot=kw["sync_slot"] or None, publication=kw["sync_publication"] or None,
        initial_copy=kw["sync_initial_copy"], updated_column=kw["sync_updated_column"] or None,
        interval_s=kw["sync_interval"], overlap=kw["sync_overlap"], reconcile=kw["sync_reconcile"],
        reconcile_interval_s=kw["sync_reconcile_interval"], once=kw["sync_once"],
    )
