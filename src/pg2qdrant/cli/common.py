"""The command line's shared parts: the `pg2qdrant` group, the dotted flags, error handling.

Kept apart from the commands (cli.py, cli_verify.py, cli_sync.py) so that each command module
can import these without importing the others.

A command copied from Qdrant's documentation works after replacing the
`docker run ... qdrant-migration` prefix with `pg2qdrant`: the flag names,
the `--flag=value` / `--flag value` forms, bare booleans (`--migration.restart`)
and the map form of `--qdrant.distance-metric` are all accepted. Global flags
may come before or after the command, as with the reference.

Every flag that takes a value also reads an environment variable, e.g. PG2QDRANT_PG_URL (the rule
is said once, in each command's help epilog: ENV_RULE); the API key also comes from QDRANT_API_KEY.

--help is grouped (rich-click): :func:`help_layout` puts each command's flags in the groups of
HELP_GROUPS, in that order, and hides the flags the command accepts but does not use (a migrate
command line, or a migration file's shared keys, still parse).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import click
import rich_click

from pg2qdrant import __version__
from pg2qdrant.core import redaction
from pg2qdrant.core.errors import Interrupted, Pg2QdrantError
from pg2qdrant.core.options import (
    DEFAULT_HNSW_EF_CONSTRUCT,
    DEFAULT_HNSW_M,
    ROWS_PER_RANGE,
    Bm25Options,
    CollectionConfig,
    CopyOptions,
    MappingConfig,
    StateConfig,
    TargetConfig,
    default_of,
)
from pg2qdrant.ui import UI

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True,
               "false": False, "0": False, "no": False, "off": False}


class OptionalBool(click.ParamType):
    """A boolean flag that may be given bare (`--x`), or with a value (`--x=false`), like Go's kong."""

    name = "BOOL"

    def convert(self, value: Any, param, ctx) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in _BOOL_WORDS:
            self.fail(f"{value!r} is not a boolean (use true or false)", param, ctx)
        return _BOOL_WORDS[word]


def bool_flag(name: str, dest: str, default: bool, help: str, *aliases: str) -> Callable:
    # The default shown only when it is true: "[default: False]" on every switch says nothing.
    return click.option(name, *aliases, dest, type=OptionalBool(), default=default, is_flag=False,
                        flag_value="true", show_default=default, help=help,
                        envvar=_env(name))


def _env(flag: str) -> str:
    return "PG2QDRANT_" + flag.lstrip("-").replace(".", "_").replace("-", "_").upper()


def opt(name: str, dest: str, *aliases: str, **kwargs) -> Callable:
    kwargs.setdefault("envvar", _env(name))
    return click.option(name, *aliases, dest, **kwargs)


def global_options(fn: Callable) -> Callable:
    """--debug / --trace / --skip-tls-verification, accepted on every command (as the reference)."""
    fn = click.option("--debug", "debug", is_flag=True, default=False,
                      help="Debug logs and tracebacks (secrets stay masked).")(fn)
    fn = click.option("--trace", "trace", is_flag=True, default=False, hidden=True,
                      help="Same as --debug (reference tool compatibility).")(fn)
    fn = click.option("--skip-tls-verification", "skip_tls_verification", is_flag=True, default=False,
                      help="Do not verify the Qdrant server's TLS certificate (REST).")(fn)
    return fn


def source_flags(verb: str) -> Callable:
    """The --pg.* flags and --layout; ``verb``: what the command does with the table (its --help says)."""
    return functools.partial(_source_options, verb=verb)


def _source_options(fn: Callable, verb: str) -> Callable:
    for decorator in reversed([
        opt("--pg.url", "pg_url", help="PostgreSQL URL, e.g. postgresql://user@host:5432/db."),
        opt("--pg.table", "pg_table", help=f"Table to {verb}: table, schema.table, '\"Schema\".\"Table\"' "
                                           "or 'schema.*'."),
        opt("--pg.key-column", "pg_key_column", multiple=True,
            help="Column(s) of the point ID (default: the primary key)."),
        opt("--pg.columns", "pg_columns", multiple=True,
            help="Columns to copy, comma-separated (default: all)."),
        opt("--pg.where", "pg_where", metavar="SQL",
            help="Only rows matching this SQL condition, e.g. \"lang = 'en'\"."),
        opt("--layout", "layout", type=click.Choice(["auto", "plain", "langchain", "langchain-v2", "llamaindex",
                                                      "vecs", "pgai"]),
            default=default_of(MappingConfig, "layout"), show_default=True,
            help="auto: a LangChain, LlamaIndex, vecs or pgai table as its Qdrant store reads it; "
                 "plain: column by column."),
    ]):
        fn = decorator(fn)
    return fn


#: migrate's, pg's and inspect's --pg.* flags.
source_options = source_flags("migrate")


def qdrant_address_options(url_help: str, key_help: str) -> list[Callable]:
    """--qdrant.url and --qdrant.api-key (migrate, verify, sync, state)."""
    return [
        opt("--qdrant.url", "qdrant_url", default=default_of(TargetConfig, "qdrant_url"), show_default=True,
            help=url_help),
        opt("--qdrant.api-key", "qdrant_api_key", envvar=["PG2QDRANT_QDRANT_API_KEY", "QDRANT_API_KEY"],
            help=key_help),
    ]


def state_options_list(help_collection: str, help_file: str) -> list[Callable]:
    """Where resume checkpoints are: --migration.offsets-collection, --migration.state-file (migrate, state)."""
    return [
        opt("--migration.offsets-collection", "offsets_collection",
            default=default_of(StateConfig, "offsets_collection"), show_default=True, help=help_collection),
        opt("--migration.state-file", "state_file", default=default_of(StateConfig, "state_file"), help=help_file),
    ]


def connect_address(ui: UI, kw: dict):
    """The target the flags of :func:`qdrant_address_options` (and --skip-tls-verification) name."""
    from pg2qdrant.runtime.target import connect_target
    return connect_target(TargetConfig(qdrant_url=kw["qdrant_url"], api_key=kw["qdrant_api_key"],
                                       skip_tls_verification=kw["skip_tls_verification"]), ui=ui)


def progress_store(kw: dict, target):
    """The saved-progress store the flags of :func:`state_options_list` name, in ``target`` or a file."""
    from pg2qdrant.runtime.target import state_store
    return state_store(StateConfig(offsets_collection=kw["offsets_collection"], state_file=kw["state_file"]), target)


def target_options(fn: Callable) -> Callable:
    for decorator in reversed([
        *qdrant_address_options(
            url_help="http(s)://host:port (6334: gRPC), grpc(s)://, local:DIR, :memory:, edge:DIR.",
            key_help="API key (better: QDRANT_API_KEY in the environment)."),
        opt("--qdrant.collection", "qdrant_collection", help="Target collection name."),
        opt("--qdrant.distance-metric", "distance_metric", multiple=True,
            help="COLUMN=METRIC, e.g. embedding=dot (default: its index's)."),
        opt("--qdrant.payload-index", "payload_index", multiple=True,
            help="Create a payload index: column[:type]; repeatable."),
        opt("--qdrant.vector-name", "vector_name", multiple=True, metavar="COLUMN=NAME",
            help="COLUMN=NAME: a column's vector name (COLUMN=: unnamed)."),
        opt("--qdrant.payload-key", "payload_key", multiple=True, metavar="COLUMN=KEY",
            help="COLUMN=KEY: rename, nest (a.b), spread (*) or drop (empty)."),
        opt("--qdrant.tenant-column", "tenant_column", metavar="COLUMN",
            help="Tenant column: a keyword payload index, is_tenant=true."),
        opt("--qdrant.bm25", "bm25", multiple=True, metavar="COLUMN[=NAME]",
            help="Sparse BM25 vector (IDF) of a text column; name: <column>-bm25. Tuning: "
                 "--qdrant.bm25-k/-b/-avg-len/-stemming/-stopwords/-lowercase/-ascii-folding (docs)."),
        bool_flag("--qdrant.hybrid", "hybrid", default_of(MappingConfig, "hybrid"),
                  "With a framework layout: the BM25 vector its hybrid mode reads."),
        opt("--qdrant.bm25-language", "bm25_language", default=default_of(Bm25Options, "language"),
            show_default=True, help="BM25 stopwords and stemmer language."),
        opt("--qdrant.bm25-k", "bm25_k", type=float, default=default_of(Bm25Options, "k"), show_default=True,
            help="BM25 k (term-frequency saturation)."),
        opt("--qdrant.bm25-b", "bm25_b", type=float, default=default_of(Bm25Options, "b"), show_default=True,
            help="BM25 b (length normalisation, 0..1)."),
        opt("--qdrant.bm25-avg-len", "bm25_avg_len", type=float, default=default_of(Bm25Options, "avg_len"),
            show_default=True, help="BM25 average document length (tokens)."),
        bool_flag("--qdrant.bm25-stemming", "bm25_stemming", default_of(Bm25Options, "stemming"),
                  "BM25: stem words (false: keep them whole)."),
        bool_flag("--qdrant.bm25-stopwords", "bm25_stopwords", default_of(Bm25Options, "stopwords"),
                  "BM25: drop the language's stopwords."),
        bool_flag("--qdrant.bm25-lowercase", "bm25_lowercase", default_of(Bm25Options, "lowercase"),
                  "BM25: lowercase the text."),
        bool_flag("--qdrant.bm25-ascii-folding", "bm25_ascii_folding", default_of(Bm25Options, "ascii_folding"),
                  "BM25: fold accents to ASCII."),
        click.option("--qdrant.no-auto-payload-index", "no_auto_payload_index", is_flag=True,
                     default=not default_of(CollectionConfig, "auto_payload_index"),
                     help="Do not mirror btree-indexed columns as payload indexes."),
        opt("--qdrant.hnsw-m", "hnsw_m", type=int, default=default_of(CollectionConfig, "hnsw_m"),
            show_default=f"pgvector index's, else {DEFAULT_HNSW_M}",
            help="HNSW m, set after the load (0: no HNSW)."),
        opt("--qdrant.hnsw-ef-construct", "hnsw_ef_construct", type=int,
            default=default_of(CollectionConfig, "hnsw_ef_construct"),
            show_default=f"pgvector index's, else {DEFAULT_HNSW_EF_CONSTRUCT}",
            help="HNSW ef_construct."),
        bool_flag("--qdrant.on-disk", "on_disk", default_of(CollectionConfig, "on_disk"),
                  "Vectors on disk (memmap) instead of in RAM."),
        opt("--qdrant.quantization", "quantization", type=click.Choice(["int8"]),
            default=default_of(CollectionConfig, "quantization"),
            help="Scalar quantization (int8) of dense vectors; default: binary where a "
                 "binary_quantize(column) index is, else none."),
        opt("--qdrant.shard-number", "shard_number", type=int, default=default_of(CollectionConfig, "shard_number"),
            help="Shards of the new collection."),
        opt("--qdrant.replication-factor", "replication_factor", type=int,
            default=default_of(CollectionConfig, "replication_factor"),
            help="Replication factor of the new collection."),
    ]):
        fn = decorator(fn)
    return fn


def alias_options(fn: Callable) -> Callable:
    """migrate's --qdrant.alias (versioned collections behind an alias, migrate/alias.py)."""
    for decorator in reversed([
        opt("--qdrant.alias", "qdrant_alias", metavar="NAME",
            help="Copy into NAME_vN, verify, then switch alias NAME to it (replaces --qdrant.collection)."),
        opt("--qdrant.keep-versions", "keep_versions", type=click.IntRange(min=1),
            default=default_of(CollectionConfig, "keep_versions"), show_default=True,
            help="With --qdrant.alias: versions kept after a switch (the live one always)."),
        bool_flag("--qdrant.adopt", "adopt", default_of(CollectionConfig, "adopt"),
                  "With --qdrant.alias: replace a plain collection named NAME by the alias."),
    ]):
        fn = decorator(fn)
    return fn


def alias_collection(kw: dict) -> str | None:
    """--qdrant.alias names the collection readers query: it stands for --qdrant.collection (an equal
    --qdrant.collection is accepted, another one is an error); None without --qdrant.alias."""
    alias = kw.get("qdrant_alias")
    if not alias:
        for flag, key in (("--qdrant.adopt", "adopt"),):
            if kw.get(key):
                from pg2qdrant.core.errors import InputError
                raise InputError(f"{flag} is only meaningful with --qdrant.alias.",
                                 fix="add --qdrant.alias NAME, or leave it out.")
        return None
    if kw.get("qdrant_collection") and kw["qdrant_collection"] != alias:
        from pg2qdrant.core.errors import InputError
        raise InputError(f"--qdrant.alias {alias!r} and --qdrant.collection {kw['qdrant_collection']!r} disagree: "
                         "with an alias the collection is the alias's next version (NAME_vN).",
                         fix="leave out --qdrant.collection (or give it the alias's name).")
    return alias


def migration_options(fn: Callable) -> Callable:
    for decorator in reversed([
        opt("--migration.num-workers", "num_workers", type=int, default=default_of(CopyOptions, "num_workers"),
            show_default=True,
            help="Parallel readers (0: one per CPU core)."),
        opt("--migration.batch-size", "batch_size", "-b", type=int, default=default_of(CopyOptions, "batch_size"),
            show_default=True,
            help="Points per write request."),
        opt("--migration.batch-delay", "batch_delay", type=int, default=default_of(CopyOptions, "batch_delay_ms"),
            show_default=True,
            help="Milliseconds to wait after each write."),
        bool_flag("--migration.restart", "restart", default_of(CopyOptions, "restart"),
                  "Ignore saved progress; copy everything again."),
        bool_flag("--migration.create-collection", "create_collection",
                  default_of(CollectionConfig, "create_collection"),
                  "Create the collection when missing.", "-c"),
        bool_flag("--migration.delete-orphans", "delete_orphans", default_of(CopyOptions, "delete_orphans"),
                  "Then delete the points whose row is gone (an exact copy)."),
        *state_options_list(help_collection="Checkpoint collection (resume).",
                            help_file="Keep resume checkpoints in this JSON file instead."),
        opt("--migration.max-retries", "max_retries", type=int, default=default_of(TargetConfig, "max_retries"),
            show_default=True,
            help="Retries of a transient failure."),
        opt("--migration.retry-deadline", "retry_deadline", type=float,
            default=default_of(TargetConfig, "retry_deadline_s"), show_default=True,
            help="Seconds one request may spend retrying."),
        opt("--migration.range-rows", "range_rows", type=int, default=default_of(CopyOptions, "range_rows"),
            help=f"Rows per unit of parallel work and resume (default {ROWS_PER_RANGE:,})."),
        bool_flag("--migration.dry-run", "dry_run", default_of(CopyOptions, "dry_run"),
                  "Read, map and check every row; write nothing."),
        opt("--migration.id-mode", "id_mode", type=click.Choice(["native", "reference", "hash"]),
            default=default_of(MappingConfig, "id_mode"),
            show_default=True,
            help="native: integer keys kept; reference: all hashed as qdrant-migration; hash: text keys "
                 "hashed."),
    ]):
        fn = decorator(fn)
    return fn


def log_options_list() -> list[Callable]:
    """--log-format and --log-file (migrate, sync, verify): read by handle_errors (observability.py)."""
    return [
        opt("--log-format", "log_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
            help="json: one JSON object per message."),
        opt("--log-file", "log_file", default=None,
            help="Log to this file (reopened on SIGHUP and when rotated)."),
    ]


def log_options(fn: Callable) -> Callable:
    for decorator in reversed(log_options_list()):
        fn = decorator(fn)
    return fn


def service_options(fn: Callable) -> Callable:
    """Running as a service (migrate, sync): metrics and health endpoint, log events (observability.py)."""
    for decorator in reversed([
        opt("--metrics-port", "metrics_port", type=click.IntRange(0, 65535), default=None,
            help="Serve /metrics, /healthz and /livez on this port (0: any)."),
        *log_options_list(),
        opt("--health.max-lag-seconds", "health_max_lag_seconds", type=click.FloatRange(min=0, min_open=True),
            default=300.0, show_default=True, help="/healthz is 503 when sync is this far behind."),
        opt("--health.max-lag-bytes", "health_max_lag_bytes", type=click.IntRange(min=1), default=1 << 30,
            show_default=True, help="/healthz is 503 when the slot holds more WAL."),
    ]):
        fn = decorator(fn)
    return fn


def start_service(kw: dict, options, ui: UI):
    """--metrics-port: the metrics and health server, closed with the command (None without the flag).

    Started once per command: the entries of a --config file share it (and its port)."""
    from pg2qdrant.runtime.observability import start_service as start
    ctx = click.get_current_context()
    if "pg2qdrant.service" not in ctx.meta:
        service = start(kw, options, ui)
        if service is not None:
            ctx.call_on_close(service.close)
        ctx.meta["pg2qdrant.service"] = service
    return ctx.meta["pg2qdrant.service"]


def _stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, kill) stops a run like Ctrl-C: progress is saved first."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def handle_errors(fn: Callable) -> Callable:
    """Turn our errors into a message + exit code; anything unexpected too (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = bool(kwargs.get("debug") or kwargs.get("trace") or os.environ.get("PG2QDRANT_DEBUG"))
        from pg2qdrant.runtime import observability
        _stop_on_sigterm()
        # A migration file's entries share the command's UI (one progress display, one metrics source).
        ui = kwargs.pop("ui", None) or observability.make_ui(kwargs.get("log_format"), kwargs.get("log_file"))
        try:
            observability.setup_logging(debug, kwargs.get("log_format"), kwargs.get("log_file"))
            return fn(*args, ui=ui, **kwargs)
        except Pg2QdrantError as exc:
            if debug:
                ui.err.print(redaction.redact(traceback.format_exc()), markup=False)
            ui.error(exc.render())
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            ui.error(Interrupted("Interrupted.", fix="rerun the same command to resume.").render())
            sys.exit(Interrupted.exit_code)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # a bug or an unforeseen failure: still no raw traceback by default
            if debug:
                ui.err.print(redaction.redact(traceback.format_exc()), markup=False)
            ui.error(f"Unexpected failure: {type(exc).__name__}: {redaction.redact(exc)}\n"
                     "Fix: rerun with --debug to see where it happened, and report it if it persists.")
            sys.exit(1)

    return wrapper


def _require(**values: Any) -> None:
    missing = [flag for flag, v in values.items() if not v]
    if missing:
        from pg2qdrant.core.errors import InputError
        raise InputError(f"Missing required flag(s): {', '.join(missing)}.",
                         fix="see `pg2qdrant migrate --help`; e.g. pg2qdrant migrate --pg.url postgresql://"
                             "user:pass@host/db --pg.table items --qdrant.collection items.")


def _distance_overrides(values) -> dict[str, str]:
    from pg2qdrant.core.plan import parse_distance_overrides
    return parse_distance_overrides(values)


def _split(values) -> list[str]:
    return [p.strip() for v in values or () for p in v.split(",") if p.strip()]


def build_migration_options(kw: dict):
    from pg2qdrant.core.options import MigrationOptions
    # Without --qdrant.collection a framework layout names the collection(s) (layouts.jobs_for).
    layout = kw.get("layout") or "auto"
    alias = alias_collection(kw)
    if alias:
        kw = {**kw, "qdrant_collection": alias}
    _require(**{"--pg.url": kw["pg_url"], "--pg.table": kw["pg_table"],
                "--qdrant.collection": kw["qdrant_collection"] or layout != "plain"})
    if kw["range_rows"] is not None and kw["range_rows"] <= 0:
        from pg2qdrant.core.errors import InputError
        raise InputError(f"--migration.range-rows must be positive (got {kw['range_rows']}).",
                         fix="use e.g. --migration.range-rows 50000.")
    return MigrationOptions(
        pg_url=kw["pg_url"], table=kw["pg_table"], collection=kw["qdrant_collection"],
        qdrant_url=kw["qdrant_url"], api_key=kw["qdrant_api_key"],
        key_columns=_split(kw["pg_key_column"]), columns=_split(kw["pg_columns"]),
        distance_overrides=_distance_overrides(kw["distance_metric"]),
        num_workers=kw["num_workers"], batch_size=kw["batch_size"], batch_delay_ms=kw["batch_delay"],
        restart=kw["restart"], create_collection=kw["create_collection"], id_mode=kw["id_mode"],
        skip_tls_verification=kw["skip_tls_verification"], dry_run=kw["dry_run"],
        hnsw_m=kw["hnsw_m"], hnsw_ef_construct=kw["hnsw_ef_construct"], on_disk=kw["on_disk"] or None,
        quantization=kw["quantization"], shard_number=kw["shard_number"],
        replication_factor=kw["replication_factor"], payload_index=_split(kw["payload_index"]),
        auto_payload_index=not kw["no_auto_payload_index"], offsets_collection=kw["offsets_collection"],
        state_file=kw["state_file"], max_retries=kw["max_retries"], retry_deadline_s=kw["retry_deadline"],
        range_rows=kw["range_rows"], delete_orphans=kw["delete_orphans"], shared_snapshot=kw.get("shared_snapshot"),
        shared_copy=kw.get("shared_copy"), alias=alias, adopt=bool(kw.get("adopt")),
        keep_versions=kw.get("keep_versions") or default_of(CollectionConfig, "keep_versions"),
        **_layout_options(kw),
    )


def _layout_options(kw: dict) -> dict:
    """The generic options of framework layouts (see layouts.py)."""
    from pg2qdrant.core.layouts import parse_pairs
    from pg2qdrant.source.where import check_where
    return dict(
        where=check_where(kw["pg_where"]) if kw.get("pg_where") is not None else None,
        vector_names=parse_pairs(kw.get("vector_name"), "--qdrant.vector-name", example="embedding="),
        payload_keys=parse_pairs(kw.get("payload_key"), "--qdrant.payload-key", example="document=page_content"),
        tenant_column=kw.get("tenant_column") or None, layout=kw.get("layout") or "auto",
        bm25=parse_bm25(kw.get("bm25")), hybrid=bool(kw.get("hybrid")), bm25_options=_bm25_options(kw))


def parse_bm25(values) -> dict[str, str]:
    """``--qdrant.bm25 COLUMN[=NAME]`` items (repeatable or comma-separated): column -> name ("": default)."""
    out: dict[str, str] = {}
    for item in _split(values):
        column, _, name = item.partition("=")
        out[column.strip()] = name.strip()
    return out


def _bm25_options(kw: dict) -> Bm25Options:
    given = {f: kw.get(f"bm25_{f}") for f in ("language", "k", "b", "avg_len", "stemming", "stopwords",
                                               "lowercase", "ascii_folding")}
    return Bm25Options(**{f: v for f, v in given.items() if v is not None})


def layout_jobs(options, ui: UI, *, command: str | None = None, default_collection: str | None = None) -> list:
    """The migrations ``options`` mean (a framework table may give several collections), announced.

    ``command``: a command that works on one collection only (sync) refuses several.
    """
    from pg2qdrant.core.errors import InputError
    from pg2qdrant.destination.address import parse_target_url
    from pg2qdrant.runtime.layouts import plan_jobs
    options.validate()  # input errors (exit 2) before connecting anywhere
    parse_target_url(options.qdrant_url)
    jobs = plan_jobs(options, default_collection=default_collection)
    if jobs[0].announce:
        ui.info(jobs[0].announce)
    if command and len(jobs) > 1:
        raise InputError(f"`pg2qdrant {command}` keeps one collection; {options.table} holds several: "
                         + ", ".join(j.options.collection for j in jobs) + ".",
                         fix="choose one with --qdrant.collection NAME (run one per collection).")
    return [j.options for j in jobs]


#: The groups of every command's --help, in order, each with its flags, the most used first. A flag
#: no group names (demo's --rows, state clear's --all) goes to a first group, "General".
HELP_GROUPS: dict[str, tuple[str, ...]] = {
    "PostgreSQL": ("--pg.url", "--pg.table", "--pg.columns", "--pg.key-column", "--pg.where", "--layout",
                   "--config", "--only"),
    "Qdrant": ("--qdrant.url", "--qdrant.api-key", "--qdrant.collection", "--qdrant.alias", "--qdrant.keep-versions",
               "--qdrant.adopt", "--skip-tls-verification",
               "--migration.max-retries", "--migration.retry-deadline"),
    "Collection": ("--qdrant.distance-metric", "--migration.create-collection", "--migration.id-mode",
                   "--qdrant.vector-name", "--qdrant.payload-key", "--qdrant.payload-index",
                   "--qdrant.no-auto-payload-index", "--qdrant.tenant-column", "--qdrant.bm25", "--qdrant.hybrid",
                   "--qdrant.bm25-language", "--qdrant.bm25-k", "--qdrant.bm25-b", "--qdrant.bm25-avg-len",
                   "--qdrant.bm25-stemming", "--qdrant.bm25-stopwords", "--qdrant.bm25-lowercase",
                   "--qdrant.bm25-ascii-folding", "--qdrant.hnsw-m",
                   "--qdrant.hnsw-ef-construct", "--qdrant.on-disk", "--qdrant.quantization", "--qdrant.shard-number",
                   "--qdrant.replication-factor"),
    "Copy": ("--migration.num-workers", "--migration.batch-size", "--migration.restart", "--migration.dry-run",
             "--migration.delete-orphans", "--verify", "--then-sync", "--migration.consistent",
             "--migration.range-rows", "--migration.batch-delay", "--migration.offsets-collection",
             "--migration.state-file"),
    "Verify": ("--verify.sample", "--verify.queries", "--verify.k", "--verify.report", "--verify.threshold",
               "--verify.vector", "--verify.queries-file", "--verify.seed", "--verify.index-timeout",
               "--verify.id-memory"),
    "Sync": ("--sync.mode", "--sync.initial-copy", "--sync.once", "--sync.reconcile", "--sync.updated-column",
             "--sync.interval", "--sync.overlap", "--sync.reconcile-interval", "--sync.slot", "--sync.publication"),
    "Service": ("--metrics-port", "--health.max-lag-seconds", "--health.max-lag-bytes"),
    "Output": ("--log-format", "--log-file", "--debug", "--version", "--help"),
}

#: The environment-variable rule, said once per command (its help's epilog).
ENV_RULE = "Every flag with a value can also be set as PG2QDRANT_<FLAG>, dots and dashes as _."

#: How --help looks: one line per flag where it fits, no metavar column, 100 columns at most.
HELP_CONFIG = rich_click.RichHelpConfiguration(
    max_width=100, options_table_column_types=["required", "opt_long", "opt_short", "help"],
    options_table_help_sections=["help", "deprecated", "default", "required"], commands_before_options=True,
    text_markup=None, style_options_panel_box="SIMPLE_HEAD", style_commands_panel_box="SIMPLE_HEAD",
    padding_epilog=(0, 1, 1, 1), padding_usage=(0, 1, 1, 1),
)


def _long_name(param: click.Parameter) -> str:
    return next((o for o in param.opts if o.startswith("--")), param.opts[0] if param.opts else param.name or "")


def flags_of(*groups: str) -> set[str]:
    """The flags of these HELP_GROUPS."""
    return {flag for name in groups for flag in HELP_GROUPS[name]}


#: BM25's tuning knobs: accepted everywhere, listed in the docs (and named by --qdrant.bm25's help), left out
#: of --help to keep it one screen.
BM25_TUNING = {"--qdrant.bm25-k", "--qdrant.bm25-b", "--qdrant.bm25-avg-len", "--qdrant.bm25-stemming",
               "--qdrant.bm25-stopwords", "--qdrant.bm25-lowercase", "--qdrant.bm25-ascii-folding"}


def help_layout(command: click.Command, hide: set[str] = frozenset()) -> click.Command:
    """Group ``command``'s flags in --help (HELP_GROUPS' order) and hide ``hide``: flags it accepts
    without using them (so that a migrate command line, or a migration file's shared keys, still
    parse), or that another command's help lists (migrate's --verify.*: `verify --help`).

    Only what --help shows changes: every flag stays a parameter, with its behaviour."""
    known = set().union(*HELP_GROUPS.values())
    for param in command.params:
        if _long_name(param) in hide:
            param.hidden = True
    shown = [_long_name(p) for p in command.params if not getattr(p, "hidden", False)]
    shown.append("--help")
    groups = {"General": [f for f in shown if f not in known]}  # not "Options": rich-click fills that one
    groups.update({name: [f for f in flags if f in shown] for name, flags in HELP_GROUPS.items()})
    command.panels = [rich_click.RichOptionPanel(name, options=flags) for name, flags in groups.items() if flags]
    command.context_settings.setdefault("rich_help_config", HELP_CONFIG)
    if any(getattr(p, "envvar", None) and not getattr(p, "hidden", False) for p in command.params):
        command.epilog = ENV_RULE
    return command


class Group(rich_click.RichGroup):
    """Lets global flags appear before the command name too (`pg2qdrant --debug pg ...`)."""

    def parse_args(self, ctx, args):
        globals_ = {"--debug", "--trace", "--skip-tls-verification"}
        front = []
        while args and args[0] in globals_:
            front.append(args.pop(0))
        if front and args:
            args = [args[0], *front, *args[1:]]
        elif front:
            args = front
        return super().parse_args(ctx, args)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                          "rich_help_config": HELP_CONFIG})
@click.version_option(__version__, prog_name="pg2qdrant")
def main() -> None:
    """Move vector data from PostgreSQL/pgvector into Qdrant, faithfully and fast."""
