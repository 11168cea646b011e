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
from typing import Any

# The command itself needs cli's shared flags and error handling (imported last, see docstring).
from pg2qdrant.cli.common import (  # noqa: E402
    build_migration_options,
    flags_of,
    global_options,
    handle_errors,
    help_layout,
    layout_jobs,
    log_options,
    main,
    migration_options,
    source_flags,
    target_options,
)
from pg2qdrant.cli.config_file import config_options, each_entry  # noqa: E402
from pg2qdrant.cli.flow_options import build_verify_options, verify_options
from pg2qdrant.ui import UI  # noqa: E402

#: Not in verify's --help: the flags of the copy and of a new collection's settings. verify takes
#: them (a migrate command line works with `verify` in its place) and they change nothing it checks.
VERIFY_HIDDEN = flags_of("Copy") | {
    "--migration.create-collection", "--qdrant.hnsw-m", "--qdrant.hnsw-ef-construct", "--qdrant.on-disk",
    "--qdrant.quantization", "--qdrant.shard-number", "--qdrant.replication-factor"}


@main.command("verify", short_help="Prove a migration: counts, IDs, values, schema and search parity.")
@source_flags("verify")
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

    Takes the same flags as migrate: replace `migrate` with `verify` in your command line (the copy's
    own flags are accepted and not listed).
    """
    from pg2qdrant.verify.checks import run_verify
    options = build_migration_options(kw)
    verify = build_verify_options(kw)  # input errors (exit 2) before connecting anywhere
    # A framework table may hold several collections (LangChain): each is verified; worst exit code.
    sys.exit(max(run_verify(job, verify, ui).exit_code for job in layout_jobs(options, ui)))


help_layout(verify_cmd, VERIFY_HIDDEN)
