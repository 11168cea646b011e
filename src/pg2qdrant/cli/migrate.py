"""`pg2qdrant migrate` (and its alias `pg`, with the flags of `qdrant-migration pg`) and `pg2qdrant inspect`.

``inspect`` takes the same flags and prints the plan the copy would follow, writing nothing.
"""

from __future__ import annotations

from typing import Any

from pg2qdrant.cli.common import (
    BM25_TUNING,
    alias_options,
    bool_flag,
    build_migration_options,
    flags_of,
    global_options,
    handle_errors,
    help_layout,
    layout_jobs,
    main,
    migration_options,
    service_options,
    source_flags,
    source_options,
    start_service,
    target_options,
)
from pg2qdrant.cli.config_file import TableRun, config_options, each_entry
from pg2qdrant.cli.flow_options import build_verify_options, sync_flags, sync_options_from, verify_options
from pg2qdrant.ui import UI

#: Not in migrate's --help: the flags `verify --help` and `sync --help` list (--verify / --then-sync
#: take them: their help says so). Each is still taken, verbatim.
MIGRATE_HIDDEN = (flags_of("Verify", "Sync", "Service") - {"--metrics-port"}) | BM25_TUNING

#: Not in inspect's --help: it reads the table and prints the plan; it writes nothing and does not
#: connect to Qdrant, so the copy's and most of the new collection's settings cannot change what it
#: prints (HNSW and quantization do: it shows them beside the pgvector indexes they override).
INSPECT_HIDDEN = flags_of("Copy") | {
    "--qdrant.url", "--qdrant.api-key", "--skip-tls-verification", "--migration.max-retries",
    "--migration.retry-deadline", "--migration.create-collection",
    "--qdrant.on-disk", "--qdrant.shard-number", "--qdrant.replication-factor"}


def _migrate_command(name: str, hidden: bool = False):
    @main.command(name, hidden=hidden, help=(
        "Copy a pgvector table into a Qdrant collection. Accepts the flags of `qdrant-migration pg`."
        if name == "migrate" else "Alias of `migrate`, named like the reference tool's `pg` command."),
        short_help="Copy a pgvector table into a Qdrant collection." if name == "migrate"
        else "Alias of `migrate` (the reference tool's `pg` command).")
    @source_options
    @target_options
    @migration_options
    @bool_flag("--verify", "verify", False, "Then verify, with the --verify.* flags of `verify --help`.")
    @verify_options
    @bool_flag("--then-sync", "then_sync", False,
               "Copy from a new slot's snapshot, then sync (CDC), with the --sync.* flags of `sync --help`.")
    @sync_flags
    @alias_options
    @config_options
    @bool_flag("--migration.consistent", "consistent", False,
               "With --config: all tables from one snapshot (not resumable).")
    @service_options
    @global_options
    @handle_errors
    @each_entry("migrate")
    def command(ui: UI, **kw: Any) -> list[TableRun] | None:
        from pg2qdrant.migrate.copy import migrate
        options = build_migration_options(kw)
        service = start_service(kw, options, ui)
        verify = build_verify_options(kw) if kw["verify"] and not options.dry_run else None
        jobs = layout_jobs(options, ui, command="migrate --qdrant.alias" if options.alias else
                           "migrate --then-sync" if kw["then_sync"] else None)
        if options.alias:
            return _behind_alias(jobs[0], kw, ui, service)
        if kw["then_sync"]:
            from pg2qdrant.sync import run_sync
            run_sync(jobs[0], sync_options_from(kw), ui, initial_copy=True, service=service)
            return
        runs = []  # each_entry exits with the worst verify code
        for options in jobs:  # a framework table may hold several collections (LangChain)
            result = migrate(options, ui, show_plan=False)
            from pg2qdrant.destination.address import parse_target_url
            result.summary(parse_target_url(options.qdrant_url).display()).render(ui)
            runs.append(TableRun(options.collection, result, verified=verify is not None))
            if verify is not None:
                from pg2qdrant.verify.checks import run_verify
                runs[-1].exit_code = run_verify(options, verify, ui).exit_code
        return runs

    return help_layout(command, MIGRATE_HIDDEN)


GATE_TRIES = 3  # --qdrant.alias --then-sync: verifications (each after a catch-up) before giving up


def _behind_alias(options, kw: dict, ui: UI, service) -> list[TableRun] | None:
    """--qdrant.alias: copy into the next version, verify it (the gate, with the --verify.* flags), then
    switch the alias (migrate/alias.py). With --then-sync the version first catches up from its own slot
    (`--sync.once`), is verified, the alias switches, and the stream goes on into the version."""
    from pg2qdrant.core.errors import Pg2QdrantError
    from pg2qdrant.migrate.alias import after_copy, hold_alias, plan_version, switch, unproven
    if options.dry_run:
        from pg2qdrant.core.errors import InputError
        raise InputError("--qdrant.alias does not take --migration.dry-run (nothing would be switched).",
                         fix="leave out --migration.dry-run, or --qdrant.alias to dry-run into a collection.")
    lock = hold_alias(options)  # until the switch: another run of this alias stops at once
    try:
        plan = plan_version(options, ui)
        version = plan.options(options)
        syncing = _VersionSync(version, sync_options_from(kw), ui, service, plan) if kw["then_sync"] else None
        run = TableRun(plan.alias, None, verified=True)
        try:
            if syncing is not None:
                syncing.catch_up(initial_copy=True)  # copy from the slot's snapshot, then catch up with the slot
            else:
                from pg2qdrant.destination.address import parse_target_url
                from pg2qdrant.migrate.copy import migrate
                run.result = migrate(version, ui, show_plan=False)
                run.result.summary(parse_target_url(options.qdrant_url).display()).render(ui)
        except (Pg2QdrantError, KeyboardInterrupt) as exc:
            ui.error(unproven(plan, "The copy did not finish.").render())
            raise exc
        after_copy(plan)
        _gate(version, kw, ui, plan, syncing)
        switch(version, plan, ui)
    finally:
        lock.release()
    if syncing is None:
        return [run]
    ui.info(f"A sync that was serving the previous version ({plan.live or plan.alias!r}) keeps updating a "
            "collection no reader sees: stop it (and drop its slot with `pg2qdrant sync drop`).")
    syncing.stream()
    return None


def _gate(version, kw: dict, ui: UI, plan, syncing: _VersionSync | None) -> None:
    """Verify the version; with --then-sync the table keeps changing while the gate reads it (a row changed
    since the catch-up differs from its point until sync applies it), so a failed gate catches up once more
    and verifies again (GATE_TRIES in all): a copy that is really wrong fails every time."""
    from pg2qdrant.migrate.alias import unproven
    from pg2qdrant.verify.checks import run_verify
    tries = GATE_TRIES if syncing is not None else 1
    for attempt in range(1, tries + 1):
        if run_verify(version, build_verify_options(kw), ui).exit_code == 0:
            return
        if attempt == tries:
            raise unproven(plan, f"Verification of {plan.version!r} failed" + (f" {tries} times" if tries > 1 else "")
                           + ": the alias was not switched." + (syncing.abandon_slot() if syncing else ""))
        ui.warn(f"verification of {plan.version!r} failed; rows changed since the catch-up explain that until "
                f"sync applies them: catching up again and verifying again (attempt {attempt + 1} of {tries}).")
        syncing.catch_up(initial_copy=False)


class _VersionSync:
    """--then-sync for a version: catch-ups (`--sync.once`) before the gate, then the stream. One stop event
    for all: a SIGTERM or Ctrl-C during a catch-up ends the run before any gate or switch (a catch-up that
    was stopped returns like one that caught up)."""

    def __init__(self, version, sync_options, ui: UI, service, plan):
        import threading
        self.version, self.sync_options, self.ui, self.service, self.plan = version, sync_options, ui, service, plan
        self.stop = threading.Event()

    def catch_up(self, *, initial_copy: bool) -> None:
        from pg2qdrant.core.errors import Interrupted
        from pg2qdrant.migrate.alias import unproven
        from pg2qdrant.sync import run_sync
        once, self.sync_options.once = self.sync_options.once, True
        try:
            run_sync(self.version, self.sync_options, self.ui, initial_copy=initial_copy, service=self.service,
                     stop=self.stop)
        finally:
            self.sync_options.once = once
        if self.stop.is_set():
            why = unproven(self.plan, "Stopped before the version was verified: the alias was not switched.")
            raise Interrupted(why.message + self.abandon_slot(), fix=why.fix)

    def stream(self) -> None:
        """The stream into the version the alias now points to. Rerunning the migrate command would build the
        next version, so every way this ends (a stop, a failure) names the `sync` command that resumes it."""
        from pg2qdrant.core.errors import Pg2QdrantError
        from pg2qdrant.sync import run_sync
        resume = self.resume_command()
        how = f"resume the stream into {self.version.collection!r} with {resume} (rerunning this migrate command " \
              "builds a new version)."
        try:
            run_sync(self.version, self.sync_options, self.ui, initial_copy=False, service=self.service,
                     stop=self.stop, resume=f"resume with {resume}")
        except Pg2QdrantError as exc:
            exc.fix = f"{exc.fix} Then {how}" if exc.fix else how
            raise
        except KeyboardInterrupt:
            from pg2qdrant.core.errors import Interrupted
            raise Interrupted("Interrupted.", fix=how) from None

    def resume_command(self) -> str:
        """`pg2qdrant sync` on the version (its slot's default name derives from the version's name, so only a
        slot the user named must be given again); the connection flags are named, never their values."""
        slot = f" --sync.slot {self.sync_options.slot}" if self.sync_options.slot else ""
        return (f"`pg2qdrant sync --qdrant.collection {self.version.collection}{slot}` and this command's other "
                f"flags (without --qdrant.alias {self.plan.alias}, --qdrant.keep-versions, --qdrant.adopt, --then-sync "
                "and the --verify.* flags)")

    def abandon_slot(self) -> str:
        """The version is left unproven and a rerun copies into a new one: the version's own slot would keep
        WAL for nothing, so it is dropped (a --sync.slot the user named is only mentioned)."""
        import time

        from pg2qdrant.core.errors import InputError, Pg2QdrantError
        from pg2qdrant.sync import sync_drop
        slot = self.sync_options.names(self.version.collection)[0]
        drop = f"`pg2qdrant sync drop --qdrant.collection {self.version.collection}` (same --pg.url"
        if self.sync_options.slot:
            return f" Replication slot {slot!r} stays and keeps WAL: {drop}, --sync.slot) removes it."
        for _ in range(30):  # the stream's connection may hold the slot for a moment after it stopped
            try:
                sync_drop(self.version.pg_url, self.version.collection, self.sync_options, self.ui)
                return f" The version's replication slot {slot!r} was dropped (a rerun copies from a new one)."
            except InputError:
                time.sleep(0.1)
            except Pg2QdrantError:
                break
        return f" Replication slot {slot!r} could not be dropped yet and keeps WAL: {drop}) removes it."


migrate_cmd = _migrate_command("migrate")
pg_cmd = _migrate_command("pg")


@main.command("inspect")
@source_flags("inspect")
@target_options
@migration_options
@config_options
@global_options
@handle_errors
@each_entry("inspect")
def inspect_cmd(ui: UI, **kw: Any) -> None:
    """Print the migration plan (collection, vectors, IDs, payload) and write nothing."""
    from pg2qdrant.runtime.session import open_source
    if not kw["qdrant_collection"] and kw["layout"] == "plain":
        kw["qdrant_collection"] = (kw["pg_table"] or "").split(".")[-1].strip('"') or "collection"
    options = build_migration_options(kw)
    # Without --qdrant.collection: the layout's collection(s), else one named after the table.
    jobs = layout_jobs(options, ui, default_collection=options.table.split(".")[-1].strip('"') or "collection")
    from pg2qdrant.ui import render_plan
    for options in jobs:
        session = open_source(options, ui, count=False)
        try:
            render_plan(ui, session.plan)
        finally:
            session.close()


help_layout(inspect_cmd, INSPECT_HIDDEN)


if __name__ == "__main__":  # pragma: no cover
    main()

