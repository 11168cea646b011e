"""The errors a user can act on.

Every failure the CLI reports is one of these: the message says what failed,
what was seen, and how to fix it. The CLI prints the message (redacted) and
exits with ``exit_code``; tracebacks are shown only with ``--debug``.
"""

from __future__ import annotations

EXIT_FAILURE = 1  # runtime failure: the input was fine, something went wrong
EXIT_INPUT = 2  # usage or input error: the user must change something


class Pg2QdrantError(Exception):
    """Base of all errors that the CLI turns into a message and an exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        return self.message if not self.fix else f"{self.message}\nFix: {self.fix}"

    def __reduce__(self):  # keep message and fix apart across processes (reader workers)
        return _rebuild, (type(self), self.message, self.fix)


def _rebuild(cls, message, fix):
    return cls(message, fix=fix)


class InputError(Pg2QdrantError):
    """The command line, the source table or the target collection is not usable as given."""

    exit_code = EXIT_INPUT


class SourceError(Pg2QdrantError):
    """PostgreSQL failed while we were reading (runtime, not the user's input)."""


class TargetError(Pg2QdrantError):
    """Qdrant failed while we were writing (runtime, not the user's input)."""


class LockConflict(InputError):
    """Another session waits for an exclusive lock on a table being read in a snapshot (see
    source.snapshot.LOCK_WAIT_S): it waits for the copy, which cannot go on while it waits."""


class DataError(InputError):
    """A row cannot be migrated faithfully (duplicate key, dimension mismatch, ...)."""


class Interrupted(Pg2QdrantError):
    """The user stopped the run (Ctrl-C / SIGTERM)."""

    exit_code = 130
