"""Connecting to the source, with errors that say what to fix and never show a password."""

from __future__ import annotations

import urllib.parse

import psycopg
from psycopg import conninfo

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError, SourceError

# What the rest of the code calls a source connection: it holds one and hands it back to
# source/ functions, never calls it itself (tests/test_architecture.py keeps psycopg in source/).
Connection = psycopg.Connection
# The errors that mean the connection to PostgreSQL broke (server restart, network): a caller
# that can reconnect and retry catches these (psycopg's classes, named here so that callers
# outside source/ need no psycopg import).
CONNECTION_LOST: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

CONNECT_TIMEOUT_S = 10  # long enough for a cloud database waking up, short enough to fail fast
APPLICATION_NAME = "pg2qdrant"

# Settings that change how PostgreSQL writes values as text. A key's text form gives the point ID
# of a non-integer, non-uuid key, text forms fill some payload fields, and key-range bounds and
# the poll watermark travel as text: all must be the same whatever PGTZ, PGDATESTYLE, PGOPTIONS
# or ALTER ROLE/DATABASE ... SET say. Set after connecting (PGC_S_SESSION) because a startup
# parameter from PGTZ/PGDATESTYLE would override the same setting given in `options`.
# (lc_monetary, the currency of `money` text, is left as the database says: it is its meaning.)
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",  # shortest text that reads back to the same float (the default)
    "bytea_output": "hex",
}
_PIN = "; ".join(f"SET {name} TO '{value}'" for name, value in SESSION_SETTINGS.items())


def check_url(url: str | None) -> dict:
    """Parse a PostgreSQL URL or keyword string; InputError if it is malformed."""
    if not url:
        raise InputError("--pg.url is required.",
                         fix="pass the connection URL, e.g. --pg.url postgresql://user:password@host:5432/dbname.")
    redaction.register_url(url)
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise InputError(
            f"--pg.url is not a valid PostgreSQL connection string: {redaction.redact(exc)}",
            fix="use the form postgresql://user:password@host:5432/dbname (percent-encode special "
                "characters in the password).",
        ) from None
    redaction.register(params.get("password"))
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError as exc:  # libpq would only fail later, at connect time
            raise InputError(
                f"--pg.url is not a valid PostgreSQL connection string: {redaction.redact(exc)}",
                fix="use the form postgresql://user:password@host:5432/dbname.",
            ) from None
        if scheme not in ("postgres", "postgresql"):
            raise InputError(f"--pg.url must start with postgresql:// (found {scheme}://).",
                             fix="use the form postgresql://user:password@host:5432/dbname.")
    return params


def url_password(url: str) -> str | None:
    """The password written in a PostgreSQL URL or keyword string (None: none, or malformed)."""
    try:
        return conninfo.conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return None


def _classify(exc: psycopg.OperationalError, safe_target: str) -> Exception:
    text = redaction.redact(str(exc)).strip()
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low or \
            "authentication failed" in low or "role" in low and "does not exist" in low:
        return InputError(
            f"PostgreSQL at {safe_target} rejected the credentials: {text}",
            fix="check the user name and password in --pg.url (or PGPASSWORD).",
        )
    if "database" in low and "does not exist" in low:
        return InputError(
            f"PostgreSQL at {safe_target}: {text}",
            fix="check the database name at the end of --pg.url (list them with psql -l).",
        )
    if "no pg_hba.conf entry" in low:
        return InputError(f"PostgreSQL at {safe_target} refused this client: {text}",
                          fix="allow this host/user in pg_hba.conf, or use the sslmode the server requires.")
    return SourceError(
        f"Cannot reach PostgreSQL at {safe_target}: {text}",
        fix="check host and port in --pg.url, that the server is running, and that no firewall blocks it.",
    )


def connect(url: str, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    """Open a connection with the pinned session settings, and a clear error on failure."""
    params = check_url(url)
    safe = redaction.safe_url(url) if "://" in url else f"host={params.get('host', 'localhost')}"
    options = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": APPLICATION_NAME}
    for k in list(options):
        if k in params:
            options.pop(k)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **options, **kwargs)
    except psycopg.OperationalError as exc:
        raise _classify(exc, safe) from None
    try:
        pin_session_settings(conn)
    except BaseException:
        conn.close()
        raise
    if conn.info.encoding == "ascii":  # a SQL_ASCII database: psycopg would return text as bytes
        from pg2qdrant.source.adapters import tolerate_invalid_utf8
        tolerate_invalid_utf8(conn)
    return conn


def pin_session_settings(conn: psycopg.Connection) -> None:
    """Apply SESSION_SETTINGS (kept after a rollback: committed at once outside autocommit)."""
    if conn.autocommit:
        conn.execute(_PIN)
    else:
        with conn.transaction():
            conn.execute(_PIN)


def usable(conn: Connection | None) -> bool:
    """The connection is open and not broken (it can still run a statement)."""
    return conn is not None and not (conn.broken or conn.closed)


def quote_qualified(schema: str, name: str) -> str:
    """``schema.name`` quoted as SQL identifiers (for a table name the catalog resolves)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))
