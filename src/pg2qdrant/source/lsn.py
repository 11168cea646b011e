"""LSNs and replication timestamps: the text form PostgreSQL shows and the clock pgoutput uses."""

from __future__ import annotations

PG_EPOCH_UNIX = 946_684_800  # 2000-01-01T00:00:00Z, the epoch of replication timestamps


def parse_lsn(text: str | None) -> int:
    if not text:
        return 0
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def pg_time_to_unix(usecs: int) -> float:
    return PG_EPOCH_UNIX + usecs / 1_000_000


def unix_to_pg_time(t: float) -> int:
    return int((t - PG_EPOCH_UNIX) * 1_000_000)
