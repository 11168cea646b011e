"""Date and time text forms, from PostgreSQL's binary representation (microseconds since 2000-01-01).
"""

from __future__ import annotations

import functools

POSTGRES_EPOCH_DAYS = 10957  # 2000-01-01 as days since 1970-01-01
USECS_PER_DAY = 86_400_000_000
DATE_INFINITY, DATE_NEG_INFINITY = 2**31 - 1, -(2**31)
TS_INFINITY, TS_NEG_INFINITY = 2**63 - 1, -(2**63)


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Proleptic Gregorian (year, month, day) of days since 1970-01-01, for any year.

    Python's datetime stops at years 1..9999; PostgreSQL goes from 4713 BC to
    294276 AD, so the conversion is done with integers (H. Hinnant's algorithm).
    """
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _year(y: int) -> str:
    # ISO 8601 (astronomical numbering: 1 BC is 0000, 2 BC is -0001); years > 9999 get a sign.
    if 0 <= y <= 9999:
        return f"{y:04d}"
    return f"{'-' if y < 0 else '+'}{abs(y):04d}"


@functools.lru_cache(maxsize=4096)
def _date_text(days_since_2000: int) -> str:
    # Cached: a table's dates and timestamps share relatively few distinct days.
    y, m, d = _civil_from_days(days_since_2000 + POSTGRES_EPOCH_DAYS)
    return f"{_year(y)}-{m:02d}-{d:02d}"


def format_date(days: int) -> str:
    """``date`` (days since 2000-01-01) as YYYY-MM-DD; infinities as PostgreSQL spells them."""
    if days == DATE_INFINITY:
        return "infinity"
    if days == DATE_NEG_INFINITY:
        return "-infinity"
    return _date_text(days)


def _clock(usecs: int) -> str:
    secs, us = divmod(usecs, 1_000_000)
    mins, s = divmod(secs, 60)
    h, mi = divmod(mins, 60)
    return f"{h:02d}:{mi:02d}:{s:02d}.{us:06d}"


def format_timestamp(usecs: int, *, utc: bool) -> str:
    """timestamp[tz] as ISO 8601 with microseconds; timestamptz in UTC with 'Z' (RFC 3339)."""
    if usecs == TS_INFINITY:
        return "infinity"
    if usecs == TS_NEG_INFINITY:
        return "-infinity"
    days, day_us = divmod(usecs, USECS_PER_DAY)
    secs, us = divmod(day_us, 1_000_000)
    mins, s = divmod(secs, 60)
    h, mi = divmod(mins, 60)
    return f"{_date_text(days)}T{h:02d}:{mi:02d}:{s:02d}.{us:06d}{'Z' if utc else ''}"


def format_time(usecs: int) -> str:
    return _clock(usecs)


def format_timetz(usecs: int, west_offset_seconds: int) -> str:
    """timetz: PostgreSQL stores the zone as seconds *west* of UTC; ISO uses east-positive."""
    east = -west_offset_seconds
    sign = "+" if east >= 0 else "-"
    h, rem = divmod(abs(east), 3600)
    mi, s = divmod(rem, 60)
    zone = f"{sign}{h:02d}:{mi:02d}" + (f":{s:02d}" if s else "")
    return _clock(usecs) + zone


def _trunc_divmod(a: int, b: int) -> tuple[int, int]:
    """C-style division (toward zero), as PostgreSQL splits interval fields."""
    q = abs(a) // b * (1 if a >= 0 else -1)
    return q, a - q * b


def format_interval(usecs: int, days: int, months: int) -> str:
    """interval in ISO 8601 form, identical to PostgreSQL's ``IntervalStyle = iso_8601``.

    Months, days and time are kept apart (a month is not 30 days), so the
    meaning survives: P1Y2M3DT4H5M6.5S. Infinite intervals (PG 17+) as text.
    """
    if (months, days, usecs) == (2**31 - 1, 2**31 - 1, TS_INFINITY):
        return "infinity"
    if (months, days, usecs) == (-(2**31), -(2**31), TS_NEG_INFINITY):
        return "-infinity"
    if not (usecs or days or months):
        return "PT0S"
    years, mons = _trunc_divmod(months, 12)
    hours, rest = _trunc_divmod(usecs, 3_600_000_000)
    mins, rest = _trunc_divmod(rest, 60_000_000)
    secs, frac = _trunc_divmod(rest, 1_000_000)
    date = _fields((years, "Y"), (mons, "M"), (days, "D"))
    time = _fields((hours, "H"), (mins, "M"), (_seconds(secs, frac), "S"))
    return "P" + date + ("T" + time if time else "")


def _fields(*parts: tuple[int | str, str]) -> str:
    """ISO 8601 duration fields, zero ones left out: ((1, "Y"), (0, "M")) -> "1Y"."""
    return "".join(f"{value}{unit}" for value, unit in parts if value)


def _seconds(secs: int, frac: int) -> str:
    """Seconds and microseconds (same sign) as PostgreSQL writes them: -6.5, 7, "" for zero."""
    if not (secs or frac):
        return ""
    text = f"{abs(secs)}" + ("." + f"{abs(frac):06d}".rstrip("0") if frac else "")
    return ("-" if secs < 0 or frac < 0 else "") + text
