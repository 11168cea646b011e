"""`--config FILE`, `--only NAME` and `--pg.table 'schema.*'`: one command over many tables.

A migration file is TOML: flags shared by every table at the top, then one ``[[table]]`` per
table with the flags it would take on the command line (keys are the flag names without
``--``, written ``"pg.url" = ...``, ``pg.url = ...`` or ``[pg] url = ...``). Each entry is turned
into that argument list and parsed by the command's own click parser, so its defaults, checks
and plan are exactly those of the same flags typed by hand: they live in one place.

Secrets stay out of the file: a password in ``pg.url`` and a written ``qdrant.api-key`` are
refused; ``${VAR}`` in any string is replaced by that environment variable.

Every entry is parsed and checked before anything runs (an input error stops everything, exit
2, nothing written); then the entries run one after the other, a failing one does not stop the
others, one summary table follows, and the exit code is the worst of them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import functools
import io
import os
import re
import sys
import tomllib
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from rich.markup import escape

from pg2qdrant.cli.common import build_migration_options, handle_errors, layout_jobs, opt, start_service
from pg2qdrant.cli.flow_options import sync_options_from
from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError, Interrupted, Pg2QdrantError
from pg2qdrant.source.connect import url_password
from pg2qdrant.ui import UI, table


def one_slot(entries: list, *, whole: bool) -> bool:
    """Whether the entries sync through the file's slot (sync_many): always for several, and for the one
    entry of a whole file (or 'schema.*') in cdc mode, so that a file shrunk to one entry keeps its slot and
    the changes waiting there; an entry picked with --only, or poll/reconcile (no slot), runs alone."""
    return len(entries) > 1 or (whole and entries[0].kw.get("sync_mode") == "cdc")


def _refuse_aliased(entries: list, source: str, command: str) -> None:
    """`migrate --config FILE --then-sync` through one slot: an entry with qdrant.alias needs its own (each
    version has its own slot, copy, gate and switch)."""
    from pg2qdrant.core.errors import InputError
    aliased = [e for e in entries if e.kw.get("qdrant_alias")]
    if command == "migrate" and aliased:
        raise InputError(f"{aliased[0].origin}: qdrant.alias with --then-sync copies into a new version from its "
                         "own slot, verifies it and switches the alias; the tables of a file share one slot.",
                         fix=f"run that entry alone: pg2qdrant migrate --config {source} --only {aliased[0].name} "
                             "--then-sync (or leave out --then-sync).")


def sync_many(ctx: click.Context, ui: UI, entries: list, source: str, command: str) -> None:
    """`sync --config FILE` (and `migrate --config FILE --then-sync`, `sync --config FILE status|drop`), see
    one_slot: one publication and one slot for all of the file's entries (sync/many.py)."""
    import os

    from pg2qdrant.core.errors import InputError
    from pg2qdrant.sync.many import file_names, run_many
    kws = [e.kw for e in entries]
    _refuse_aliased(entries, source, command)
    shared = sorted(k for k in kws[0] if (k.startswith("sync_") or k in ("pg_url", "then_sync", "metrics_port"))
                    and any(kw.get(k) != kws[0].get(k) for kw in kws))
    if shared:
        flag = {p.name: p.opts[0] for p in ctx.command.params}
        flags = ", ".join(flag.get(k, k) for k in shared)
        raise InputError(f"With several tables synced through one slot, {flags} must be the same for every entry.",
                         fix="set them once at the top of the file (or on the command line).")
    stem = os.path.splitext(os.path.basename(source))[0] if source.endswith(".toml") else source
    slot, publication = file_names(stem, sync_options_from(kws[0]))
    if ctx.invoked_subcommand is not None:  # status / drop: the file's slot and publication
        ctx.obj = {**kws[0], "sync_slot": slot, "sync_publication": publication}
        return
    sync_options = sync_options_from(kws[0])
    sync_options.slot, sync_options.publication = slot, publication
    one = "sync" if command == "sync" else "migrate --then-sync"
    jobs = [layout_jobs(build_migration_options(kw), ui, command=one)[0] for kw in kws]
    run_many(jobs, sync_options, ui, initial_copy=True if command == "migrate" else None,
             service=start_service(kws[0], jobs[0], ui))



ENTRIES = "table"  # the file's array of tables: [[table]]
COMMANDS = ("migrate", "inspect", "verify", "sync")  # whose flags a file may hold
_NOT_IN_FILE = {"config", "only", "help"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_EXAMPLE = 'pg2qdrant migrate --config tables.toml'


def config_options(fn: Callable) -> Callable:
    fn = opt("--only", "only", multiple=True, metavar="NAME",
             help="Only these entries of --config (or of 'schema.*').")(fn)
    return opt("--config", "config", metavar="FILE",
               help="Migration file (TOML): one [[table]] per table.")(fn)


@dataclasses.dataclass
class TableRun:
    """What migrate did for one collection: a row of the summary table."""

    collection: str
    result: Any = None  # pipeline.MigrationResult
    exit_code: int = 0  # verify's, after the copy (migrate --verify)
    verified: bool = False


@dataclasses.dataclass
class Entry:
    name: str  # what --only selects and the summary shows
    origin: str  # where it was written, for messages
    kw: dict[str, Any]  # the parsed flags, as the command's body receives them
    group: str = ""  # the name of the 'schema.*' entry this table was found by
    left_out: tuple[str, ...] = ()  # 'schema.*': the schema's other relations, each with why
    error: Pg2QdrantError | None = None  # its flags do not parse: reported with the others' errors


# --- reading the file ------------------------------------------------------------------------

def _file_flags() -> set[str]:
    from pg2qdrant.cli.common import main
    return {o[2:] for name in COMMANDS for p in main.commands[name].params for o in p.opts
            if o.startswith("--")} - _NOT_IN_FILE


def _flatten(raw: dict[str, Any], where: str, flags: set[str], prefix: str = "") -> dict[str, Any]:
    """{"pg": {"url": u}} and {"pg.url": u} alike -> {"pg.url": u}; a table under a flag is its map form."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and name not in flags:
            items = _flatten(value, where, flags, name).items()
        elif isinstance(value, dict):  # qdrant.distance-metric = {embedding = "dot"}
            items = [(name, [f"{k}={v}" for k, v in value.items()])]
        else:
            items = [(name, value)]
        for name, value in items:
            if name in out:
                raise InputError(f"{where}: {name} is given twice.", fix="keep one of them.")
            out[name] = value
    return out


def _check_keys(values: dict[str, Any], where: str, flags: set[str]) -> None:
    for key in values:
        if key not in flags:
            close = difflib.get_close_matches(key, sorted(flags), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"{where}: unknown key {key!r}.",
                             fix=f"{hint}keys are the flag names without '--' (see `pg2qdrant migrate --help`, "
                                 "`verify --help` and `sync --help`).")


def _check_secrets(values: dict[str, Any], where: str) -> None:
    """A migration file is shared and committed: secrets come from the environment, never from it."""
    url = values.get("pg.url")
    if isinstance(url, str):
        password = url_password(url)  # None when malformed: --pg.url's own check says so when it is used
        if password and not _VAR.fullmatch(password):
            raise InputError(f"{where}: pg.url holds a password; a migration file must not.",
                             fix="remove it from the URL and set PGPASSWORD or ~/.pgpass, or write ${PG_PASSWORD} "
                                 "in its place and export PG_PASSWORD.")
    key = values.get("qdrant.api-key")
    if key is not None and not (isinstance(key, str) and _VAR.fullmatch(key)):
        raise InputError(f"{where}: qdrant.api-key is written in the file; a migration file must not hold it.",
                         fix="remove it and set QDRANT_API_KEY in the environment (or write "
                             "qdrant.api-key = \"${MY_KEY}\" and export MY_KEY).")


def _expand(value: Any, key: str, where: str) -> Any:
    """${VAR} -> the environment variable's value (a missing one is an error, never '')."""
    if isinstance(value, list):
        return [_expand(v, key, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise InputError(f"{where}: {key} refers to ${{{name}}}, which is not set in the environment.",
                             fix=f"export {name} before running, or remove the reference.")
        return os.environ[name]

    out = _VAR.sub(sub, value)
    if out != value and key == "pg.url":
        redaction.register_url(out)
    elif out != value and key == "qdrant.api-key":
        redaction.register(out)
    return out


def read_file(path: str) -> list[tuple[str | None, str, dict[str, Any]]]:
    """(name, where, flag values) of each [[table]] of the file, the shared flags merged in."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise InputError(f"Cannot read the migration file {path}: {exc.strerror}.",
                         fix="check the path given to --config.") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML: {exc}.", fix="fix the line shown (see the example in "
                                                                  "docs/migration-file.md).") from None
    tables = doc.pop(ENTRIES, None)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{path} has no [[{ENTRIES}]] entry.",
                         fix=f"add one [[{ENTRIES}]] per table (an array of tables: two brackets), with its "
                             "pg.table and qdrant.collection.")
    flags = _file_flags()
    where = f"{path} (top level)"
    shared = _flatten(doc, where, flags)
    _check_keys(shared, where, flags)
    _check_secrets(shared, where)
    shared = {k: _expand(v, k, where) for k, v in shared.items()}
    out = []
    for i, raw in enumerate(tables, 1):
        name = raw.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InputError(f"{path}: [[{ENTRIES}]] #{i} has a name that is not a text.",
                             fix='write name = "documents", or leave it out (the collection names it).')
        where = f"{path}, [[{ENTRIES}]] " + (repr(name) if name else f"#{i}")
        values = _flatten(raw, where, flags)
        _check_keys(values, where, flags)
        _check_secrets(values, where)
        out.append((name, where, {**shared, **{k: _expand(v, k, where) for k, v in values.items()}}))
    return out


# complexity: one case per value a file may hold (bool, list, table, scalar, ${VAR}) and per flag spelling; each is
# one line.
def _argv(values: dict[str, Any], command: click.Command, where: str) -> list[str]:
    """The command line these values stand for (keys this command does not take are left out:
    a file shared by migrate and inspect may hold --verify.* flags)."""
    params = {o[2:]: p for p in command.params for o in p.opts if o.startswith("--")}
    argv: list[str] = []
    for key, value in values.items():
        param = params.get(key)
        if param is None:
            continue
        if isinstance(value, list) and not param.multiple:
            raise InputError(f"{where}: {key} takes one value, not a list.", fix=f'write {key} = "value".')
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) and param.is_flag:  # --debug, --qdrant.no-auto-payload-index
                argv += [f"--{key}"] if item else []
            elif isinstance(item, (str, int, float, bool)) and not param.is_flag:
                argv.append(f"--{key}=" + (str(item).lower() if isinstance(item, bool) else str(item)))
            else:
                raise InputError(f"{where}: {key} has a value of the wrong kind ({type(item).__name__}).",
                                 fix=f"write {key} = true or false." if param.is_flag
                                 else f"write {key} as a text, a number or true/false (a list if repeatable).")
    return argv


def _given(ctx: click.Context) -> dict[str, Any]:
    """The flags typed on the command line: they apply to every entry and win over the file."""
    out = {}
    for p in ctx.command.params:
        if p.name in _NOT_IN_FILE or ctx.get_parameter_source(p.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[p.name]
        out[next(o for o in p.opts if o.startswith("--"))[2:]] = list(value) if isinstance(value, tuple) else value
    return out


def _parse(ctx: click.Context, argv: list[str], where: str) -> dict[str, Any]:
    """The command's own parser on ``argv``: defaults, environment variables and checks as typed."""
    try:
        sub = ctx.command.make_context(ctx.info_name, argv, parent=ctx.parent)
    except click.ClickException as exc:
        raise InputError(f"{where}: {exc.format_message()}", fix="correct this value in the file.") from None
    return {k: v for k, v in sub.params.items() if k not in _NOT_IN_FILE}


# --- entries ---------------------------------------------------------------------------------

def _wildcard_schemas(text: str | None) -> list[str] | None:
    """'schema.*' -> the schema names to try (verbatim, then folded as SQL would); else None."""
    from pg2qdrant.source.catalog import split_qualified_name
    if not text or not text.endswith(".*"):
        return None
    try:
        parts = split_qualified_name(text)
    except InputError:
        return None
    if len(parts) != 2 or parts[1] != ("*", False):
        return None
    schema, quoted = parts[0]
    return [schema] if quoted else list(dict.fromkeys([schema, schema.lower()]))


def _expand_schema(entry: Entry) -> list[Entry]:
    """A 'schema.*' entry -> one entry per table of the schema with a vector column, each into a
    collection named after it (a framework table: its layout names the collections)."""
    from pg2qdrant.runtime.layouts import detect
    from pg2qdrant.source import catalog, connect
    text = entry.kw.get("pg_table")
    schemas = _wildcard_schemas(text)
    if schemas is None:
        return [entry]
    if entry.kw.get("qdrant_collection"):
        raise InputError(f"{entry.origin}: --pg.table {text!r} copies each table into a collection named after "
                         "it; --qdrant.collection names one collection.",
                         fix="leave out --qdrant.collection, or name the tables one by one in a migration file.")
    conn = connect.connect(entry.kw.get("pg_url"), autocommit=True)
    try:
        found = catalog.schema_vector_tables(conn, schemas)
        if not found:
            others = catalog.vector_tables(conn)
            raise InputError(f"{entry.origin}: schema {schemas[0]!r} has no table with a pgvector column.",
                             fix="check the schema name" + (f"; tables with vector columns: {', '.join(others)}."
                                                            if others else "."))
        out = []
        layout = entry.kw.get("layout") or "auto"
        left_out = _left_out(conn, found[0][0], {name for _, name in found})
        for schema, name in found:
            qualified = connect.quote_qualified(schema, name)
            framework = layout not in ("auto", "plain") or (
                layout == "auto" and detect(conn, catalog.describe_table(conn, qualified)) is not None)
            out.append(Entry(name, f"{entry.origin}, table {qualified}", group=entry.name, left_out=left_out,
                             kw={**entry.kw, "pg_table": qualified, "qdrant_collection": None if framework else name}))
        return out
    finally:
        conn.close()


def _left_out(conn: Any, schema: str, taken: set[str]) -> tuple[str, ...]:
    """The relations of ``schema`` that 'schema.*' does not take, each with why (catalog.schema_vector_tables
    takes the tables with a pgvector column that are not read through a parent)."""
    from pg2qdrant.source import catalog
    rows = catalog.schema_relations(conn, schema)
    kinds = {"v": "a view", "m": "a materialized view"}
    out = []
    for name, display, relkind, partition, has_vector, parent in rows:
        if name in taken:
            continue
        if not has_vector:
            why = "no pgvector column"
        elif relkind in kinds:
            why = f"{kinds[relkind]}: name it with --pg.table to copy it"
        else:
            why = f"{'a partition of' if partition else 'inherits from'} {parent}, read through it"
        out.append(f"{display} ({why})")
    return tuple(out)


# complexity: the migration file's precedence rules (file, entry, command line, environment, --only, 'schema.*') in
# the order they apply; split, the order would be hidden.
def resolve(ctx: click.Context, kw: dict[str, Any], config: str | None, only: tuple[str, ...]) -> list[Entry]:
    """The entries a command line means, expanded and selected (--only)."""
    if config:
        given = _given(ctx)
        for flag in ("pg.table", "qdrant.collection"):
            if flag in given:
                raise InputError(f"--{flag} names one table; with --config each [[{ENTRIES}]] names its own.",
                                 fix="choose entries with --only NAME, or leave out --config.")
        entries = []
        for name, where, values in read_file(config):
            try:
                parsed = _parse(ctx, _argv({**values, **given}, ctx.command, where), where)
            except InputError as exc:
                entries.append(Entry(name or where, where, {}, error=exc))
                continue
            table = parsed.get("pg_table") or ""  # 'schema.*' names its entry whole
            table = table if _wildcard_schemas(table) else table.split(".")[-1].strip('"')
            entries.append(Entry(name or parsed.get("qdrant_collection") or table or where, where, parsed))
    else:
        if only and not _wildcard_schemas(kw.get("pg_table")):
            raise InputError("--only selects entries of a migration file.",
                             fix="add --config FILE, or leave out --only.")
        entries = [Entry(kw.get("pg_table") or "", f"--pg.table {kw.get('pg_table')!r}", dict(kw))]
    entries = [e for entry in entries for e in ([entry] if entry.error else _expand_schema(entry))]
    twice = [n for n, c in collections.Counter(e.name for e in entries).items() if c > 1]
    if twice:
        raise InputError(f"Several entries are named {', '.join(map(repr, twice))}.",
                         fix=f'give each [[{ENTRIES}]] its own name = "..." (--only and the summary use it).')
    wanted = [n.strip() for v in only for n in v.split(",") if n.strip()]
    unknown = [n for n in wanted if not any(n in (e.name, e.group) for e in entries)]
    if unknown:
        raise InputError(f"--only {', '.join(unknown)}: no such entry.",
                         fix=f"choose among: {', '.join(e.name for e in entries)}.")
    return [e for e in entries if not wanted or e.name in wanted or e.group in wanted]


def _stop_on(errors: list[Pg2QdrantError], ui: UI) -> None:
    if errors:
        for exc in errors:
            ui.error(exc.render())
        sys.exit(max(e.exit_code for e in errors))


def _check(command: str, entry: Entry) -> int:
    """What the command checks before it writes (flags, table, plan: keys, columns, dimensions),
    for every entry before any runs; warnings are left to the run. Returns the rows to copy when
    the entry reads a shared snapshot (--migration.consistent: one progress display), else 0."""
    from pg2qdrant.cli.flow_options import build_verify_options
    from pg2qdrant.runtime.session import open_source
    options = build_migration_options(entry.kw)
    if command == "verify" or (entry.kw.get("verify") and not options.dry_run):
        build_verify_options(entry.kw)
    one = "sync" if command == "sync" else "migrate --then-sync" if entry.kw.get("then_sync") else None
    silent = UI(quiet=True, stdout=io.StringIO(), stderr=io.StringIO())
    rows = 0
    for job in layout_jobs(options, silent, command=one):
        shared = options.shared_snapshot  # checked as of the snapshot it is copied from, and counted
        session = open_source(job, silent, count=shared is not None, snapshot_id=shared)
        rows += session.source_rows or 0
        if job.shared_copy is not None:  # counted and checked once: the copy reads the same snapshot
            job.shared_copy.remember(job, session.source_rows)
        session.close()
    return rows


def _prefixed(entry: Entry, exc: Pg2QdrantError) -> Pg2QdrantError:
    return type(exc)(f"{entry.origin}: {exc.message}", fix=exc.fix)


# --- running ---------------------------------------------------------------------------------

def each_entry(command: str) -> Callable:
    """Run the command's body once per entry of --config FILE (or per table of 'schema.*'),
    then print one summary table; without them the body runs once, exactly as before.

    The body returns a list of :class:`TableRun` (migrate) or nothing, and may exit."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, ui: UI, **kw: Any) -> None:
            config, only = kw.pop("config", None), kw.pop("only", ())
            if not config and not only and _wildcard_schemas(kw.get("pg_table")) is None:
                return _exit(fn(*args, ui=ui, **kw))
            ctx = click.get_current_context()
            entries = resolve(ctx, kw, config, only)
            ui = _file_log_ui(entries, kw, ui)
            _say_left_out(ui, entries)
            one_table = command == "sync" or any(e.kw.get("then_sync") for e in entries)
            errors = [e.error for e in entries if e.error]
            shared = _share_snapshot(entries) if command == "migrate" and not one_table else None
            if shared is not None:
                ctx.call_on_close(shared.close)  # ends the snapshot once every table has been read
            rows = 0
            for entry in entries:
                if command != "inspect" and ctx.invoked_subcommand is None and not entry.error:
                    try:  # `sync status/drop` write nothing: they are not held up by a check
                        rows += _check(command, entry)
                    except Pg2QdrantError as exc:
                        errors.append(_prefixed(entry, exc))
            _stop_on(errors, ui)
            if one_table and one_slot(entries, whole=not only):  # one publication and one slot for them all
                return sync_many(ctx, ui, entries, config or kw.get("pg_table") or "", command)
            if one_table:
                return _exit(fn(*args, ui=ui, **entries[0].kw))
            _run_all(fn, args, entries, command, ui, shared_rows=rows if shared is not None else None,
                     shared_copy=shared)
        return wrapper
    return decorate


def _file_log_ui(entries: list[Entry], kw: dict[str, Any], ui: UI) -> UI:
    """log-format / log-file written in the file: the command's messages follow them, as they would
    the same flags typed (one log for the whole run, so every entry must agree)."""
    wanted = {(e.kw.get("log_format"), e.kw.get("log_file")) for e in entries if not e.error}
    if len(wanted) > 1:
        raise InputError("log-format and log-file must be the same for every entry: the run has one log.",
                         fix="set them once at the top of the file (or on the command line).")
    if not wanted or wanted == {(kw.get("log_format"), kw.get("log_file"))}:
        return ui
    from pg2qdrant.runtime import observability
    log_format, log_file = wanted.pop()
    observability.setup_logging(bool(kw.get("debug") or kw.get("trace")), log_format, log_file)
    return observability.make_ui(log_format, log_file)


def _say_left_out(ui: UI, entries: list[Entry]) -> None:
    """Name, once per 'schema.*' entry, the relations of the schema it does not take, and why."""
    for group, left_out in dict.fromkeys((e.group, e.left_out) for e in entries if e.left_out):
        ui.info(f"{group}: left out {len(left_out)} relation(s) of the schema: {'; '.join(left_out)}.")


def _exit_code(runs: Any) -> int:
    return max((r.exit_code for r in runs or ()), default=0)


def _exit(runs: Any) -> None:
    if _exit_code(runs):
        sys.exit(_exit_code(runs))


def _share_snapshot(entries: list[Entry]) -> Any:
    """--migration.consistent: export one snapshot for every entry to read (each entry's
    ``shared_snapshot``); the returned pipeline.SharedCopy (each entry's ``shared_copy``) holds it
    until closed. None without the flag."""
    from pg2qdrant.source import connect, snapshot
    ok = [e for e in entries if not e.error]
    asked = {bool(e.kw.get("consistent")) for e in ok}
    if asked != {True}:
        if asked == {True, False}:
            raise InputError("--migration.consistent is set for some entries only; one snapshot is read by all the "
                             "tables of a run or by none.",
                             fix="set migration.consistent at the top of the file (or on the command line).")
        return None
    urls = {e.kw.get("pg_url") for e in ok}
    if len(urls) > 1:
        raise InputError("--migration.consistent reads every table in one snapshot of one database; the entries "
                         f"connect with {len(urls)} different pg.url.",
                         fix="give every entry the same pg.url (at the top of the file), or leave out "
                             "--migration.consistent to copy table by table.")
    if None in urls:
        return None  # --pg.url is missing: the checks say so
    conn = connect.connect(urls.pop(), autocommit=True)
    try:
        snapshot_id = snapshot.begin_snapshot(conn)
    except BaseException:
        conn.close()
        raise
    from pg2qdrant.migrate.copy import SharedCopy
    shared = SharedCopy(conn)
    for entry in ok:
        entry.kw.update(shared_snapshot=snapshot_id, shared_copy=shared)
    return shared


# complexity: runs the entries in order and keeps each one's outcome (result, input error, runtime error, interrupt)
# for the summary and the exit code.
def _run_all(fn: Callable, args: tuple, entries: list[Entry], command: str, ui: UI, *,
             shared_rows: int | None = None, shared_copy: Any = None) -> None:
    """Run every entry; ``shared_rows``: they read one snapshot holding that many rows (one display);
    ``shared_copy``: their reader processes, stopped after the last one."""
    rows, worst, failed = [], 0, 0
    with contextlib.nullcontext() if shared_rows is None else ui.shared_progress(
            shared_rows, f"{len(entries)} entries, one snapshot"), \
            contextlib.nullcontext() if shared_copy is None else shared_copy.readers:
        for i, entry in enumerate(entries, 1):
            ui.info(f"[{i}/{len(entries)}] {entry.name}: {entry.kw.get('pg_table')}")
            try:  # the command's own error handling, per entry: a failure is reported, the next one runs
                runs, code = handle_errors(fn)(*args, ui=ui, **entry.kw), 0
                code = _exit_code(runs)
            except SystemExit as exc:
                runs, code = None, exc.code if isinstance(exc.code, int) else 1
            rows += _rows(entry, command, runs, code)
            worst, failed = max(worst, code), failed + (code != 0)
            if code == Interrupted.exit_code:
                break
    title = f"Summary: {len(entries)} entries, {i - failed} ok, {failed} failed" + (
        f", {len(entries) - i} not run (interrupted)" if i < len(entries) else "") + (
        ", read in one snapshot" if shared_rows is not None else "")
    columns = ("entry", "table", "collection", "rows", "points", "time", "rate", "verdict") if command == "migrate" \
        else ("entry", "table", "verdict")
    if len(entries) > 1:  # one entry: its command's own summary is the run's
        ui.result(title, {"event": "entries_summary", "entries": [dict(zip(columns, r, strict=True)) for r in rows]},
                  table(title, columns, [tuple(escape(c) for c in r) for r in rows]))
    if shared_rows is not None and (failed or i < len(entries)):
        ui.warn("These tables were read in one snapshot, which ended with this run: it cannot be resumed. Rerun "
                "with --migration.consistent to copy every table again from a new snapshot (add "
                "--migration.delete-orphans to remove points of rows deleted meanwhile), or without it to resume "
                "table by table from the saved progress (the collections are then not one point in time).")
    if worst:
        sys.exit(worst)


def _rows(entry: Entry, command: str, runs: Any, code: int) -> list[tuple[str, ...]]:
    table_name = entry.kw.get("pg_table") or ""
    failed = f"FAILED (exit {code}): see the error above"
    if command != "migrate":
        done = {"verify": "verify passed", "inspect": "plan printed"}.get(command, "done")
        return [(entry.name, table_name, failed if code else done)]
    if not runs:
        return [(entry.name, table_name, entry.kw.get("qdrant_collection") or "", "", "", "", "",
                 failed if code else "done")]
    out = []
    for run in runs:
        r = run.result
        verdict = "dry run: nothing written" if r.dry_run else r.verdict
        if run.verified:
            verdict += "; verify passed" if run.exit_code == 0 else f"; FAILED verify (exit {run.exit_code})"
        out.append((entry.name, table_name, run.collection, f"{r.source_rows:,}",
                    "" if r.dry_run else f"{r.target_count:,}", f"{r.seconds:,.1f} s", f"{r.rate:,.0f} rows/s",
                    verdict))
    return out
