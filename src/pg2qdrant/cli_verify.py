"""`pg2qdrant verify`: the command line of the five verification checks (see the verify package).

It takes the migrate command's own flags (``--pg.*``, ``--qdrant.*``,
``--migration.*``), so a migrate command line becomes a verify command line by
changing the command name: the plan (and so the mapping and the point IDs,
``--migration.id-mode`` included) is the one migrate used. The ``--verify.*``
flags are also meant for ``migrate --verify``: :func:`verify_options` and
:func:`build_verify_options` are reusable for that.

Importing this module registers the command on :data:`pg2qdrant.cli.main`. The
option decorators come first and need nothing from ``cli``, so ``cli`` may import
them from here while it is itself being imported (in either import order).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from pg2qdrant.verify import (
    DEFAULT_K,
    DEFAULT_QUERIES,
    ID_MEMORY_MB,
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
    return click.option(name, dest, envvar=env, show_envvar=True, **kwargs)


def verify_options(fn: Callable) -> Callable:
    """The --verify.* flags (for `verify`, and for `migrate --verify`)."""
    defaults = Thresholds()
    threshold_help = ", ".join(f"{name} ({getattr(defaults, attr):g})" for name, attr in THRESHOLD_NAMES.items())
    for decorator in reversed([
        _opt("--verify.sample", "verify_sample", metavar="N|P%",
             help="Rows compared field by field: a count or a percentage. Default: all rows under 100,000, "
                  "else max(1,000, 1%)."),
        _opt("--verify.queries", "verify_queries", type=int, default=DEFAULT_QUERIES, show_default=True,
             help="Query vectors sampled from the table for search parity (0 = skip)."),
        _opt("--verify.k", "verify_k", type=int, default=DEFAULT_K, show_default=True,
             help="Neighbours compared per query (recall@k)."),
        _opt("--verify.queries-file", "verify_queries_file", metavar="PATH",
             help="Query vectors instead of sampled rows: .npy (queries x dim), .json list (or {vector: list}), "
                  ".jsonl (one per line)."),
        _opt("--verify.vector", "verify_vector", multiple=True,
             help="Named vector(s) to search, comma-separated or repeated (default: all)."),
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


# The command itself needs cli's shared flags and error handling (imported last, see docstring).
from pg2qdrant.cli_common import (  # noqa: E402
    build_migration_options,
    global_options,
    handle_errors,
    layout_jobs,
    log_options,
    main,
    migration_options,
    source_options,
    target_options,
)
from pg2qdrant.cli_config import config_options, each_entry  # noqa: E402
from pg2qdrant.ui import UI  # noqa: E402


@main.command("verify")
@source_options
@target_options
@migration_options
@verify_options
@config_options
@log_options
@global_options
@handle_errors
@each_entry("verify")
def verify_cmd(ui: UI, **kw: Any) -> None:
    """Prove a migration: counts, IDs, values on a sample, schema and search parity (exit 0 pass, 1 fail).

    Takes the same flags as migrate: replace `migrate` with `verify` in your command line.
    """
    from pg2qdrant.verify import run_verify
    options = build_migration_options(kw)
    verify = build_verify_options(kw)  # input errors (exit 2) before connecting anywhere
    # A framework table may hold several collections (LangChain): each is verified; worst exit code.
    sys.exit(max(run_verify(job, verify, ui).exit_code for job in layout_jobs(options, ui)))
