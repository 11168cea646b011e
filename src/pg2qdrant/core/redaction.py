"""Keep passwords and API keys out of everything we print, log or store.

Secrets are registered as soon as they are known (URL passwords, PGPASSWORD,
the Qdrant API key); every string that leaves the process through the console,
logging or a report goes through :func:`redact`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import unquote, urlsplit

MASK = "****"
_lock = threading.Lock()
_secrets: set[str] = set()

# user:password@ in any URL-looking text, and password=... in libpq keyword strings.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_KW_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` hides it wherever it appears."""
    if secret and len(secret) >= 3:  # shorter strings would mask ordinary text
        with _lock:
            _secrets.add(secret)
            _secrets.add(unquote(secret))


def register_url(url: str | None) -> None:
    """Register the password of a connection URL (and PGPASSWORD, which libpq may use)."""
    register(os.environ.get("PGPASSWORD"))
    if not url:
        return
    try:
        parts = urlsplit(url)
        register(parts.password)
    except ValueError:
        pass
    for match in _KW_PASSWORD.finditer(url):
        register(match.group("pw").strip("'"))
    for match in _URL_PASSWORD.finditer(url):
        register(match.group("pw"))


def registered() -> tuple[str, ...]:
    """The secrets known so far (handed to reader processes, which redact on their own)."""
    with _lock:
        return tuple(_secrets)


def redact(text: object) -> str:
    """Return ``text`` with every registered secret and URL password masked."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("tail"), s)
    s = _KW_PASSWORD.sub(lambda m: m.group("head") + MASK, s)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    return s


def safe_url(url: str) -> str:
    """A URL fit for display: the password replaced by the mask."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Logging filter that masks secrets in every record, arguments included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
