"""Payload scalars (each function takes a non-NULL value as psycopg decodes it), and the converter
of each payload kind.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pg2qdrant.core.mapping.ids import INT64_MAX, INT64_MIN
from pg2qdrant.core.plan import PayloadKind

_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def float8_value(v: float) -> float | str:
    """float8 as a JSON number; NaN and +-Infinity (not JSON) as PostgreSQL spells them."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else _NONFINITE[v]


_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_F32_MIN_NORMAL = 2.0**-126


def float4_value(v: float) -> float | str:
    """float4 as the shortest decimal that reads back as the same float4 (what psql shows).

    psycopg widens a float4 to the nearest double (0.1 -> 0.10000000149011612);
    the value meant is 0.1, and float32(0.1) is the same float4 bit pattern. Like
    PostgreSQL's float4out (Ryu), a decimal exactly halfway to a neighbouring
    float4 does not count as reading back, even where round-half-even would.
    """
    if not math.isfinite(v):
        return float8_value(v)
    if v == 0:
        return v
    mantissa, exponent = math.frexp(v)
    if abs(v) < _F32_MIN_NORMAL or abs(mantissa) == 0.5:
        return _shortest_between(v, *_f32_midpoints(v))
    # Elsewhere the interval is symmetric (half a float4 ulp each side) and narrower than
    # 6-digit decimal steps, so the nearest d-digit decimal is the only candidate for each d.
    half_ulp = math.ldexp(1.0, exponent - 25)
    lo, hi = v - half_ulp, v + half_ulp
    for digits in range(6, 10):
        text = f"{v:.{digits}g}"
        candidate = float(text)
        if lo < candidate < hi or (candidate in (lo, hi) and lo < Decimal(text) < hi):
            return candidate
    return v  # pragma: no cover - 9 significant digits always round-trip a float32


def _f32_midpoints(v: float) -> tuple[float, float]:
    """The exact doubles halfway between float4 ``v`` and its two neighbours."""
    bits = _U32.unpack(_F32.pack(v))[0]
    below, above = (_F32.unpack(_U32.pack(b))[0] for b in (bits - 1, bits + 1))
    if v < 0:
        below, above = above, below
    return (v + below) / 2, (v + above) / 2


def _shortest_between(v: float, lo: float, hi: float) -> float:
    """Shortest decimal strictly inside (lo, hi), nearest to v: subnormals and powers of two,
    where the interval is wide or lopsided, so both roundings at each length are tried."""
    exact, low, high = Decimal(v), Decimal(lo), Decimal(hi)
    for digits in range(1, 10):
        step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        inside = [c for c in (exact.quantize(step, "ROUND_FLOOR"), exact.quantize(step, "ROUND_CEILING"))
                  if low < c < high]
        if inside:
            # Nearest; on a tie the even last digit, as Ryu's round-half-even does.
            return float(min(inside, key=lambda c: (abs(c - exact), c.as_tuple().digits[-1] % 2)))
    return v  # pragma: no cover


def numeric_value(d: Decimal) -> int | float | str:
    """numeric as an int (no fractional digits, fits int64), a float (exact round trip), else text.

    "Exact" means the float's shortest decimal equals the numeric's value, so
    12.50 becomes 12.5 but 0.1000000000000000055511 stays a string with every
    digit. NaN and +-Infinity become the strings PostgreSQL prints.
    """
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("Infinity" if d > 0 else "-Infinity")
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        i = int(d)
        return i if INT64_MIN <= i <= INT64_MAX else format(d, "f")
    f = float(d)
    if math.isfinite(f) and Decimal(repr(f)) == d:
        return f
    return format(d, "f")


def text_value(v: str | bytes) -> str:
    """Text as a string. Bytes come only from SQL_ASCII databases: invalid UTF-8 is
    replaced by U+FFFD rather than crashing (the only lossy case, documented)."""
    if isinstance(v, str):
        return v
    return bytes(v).decode("utf-8", "replace")


def bytea_value(v: bytes) -> str:
    return base64.b64encode(bytes(v)).decode("ascii")


def _identity(v: Any) -> Any:
    return v


def _to_str(v: Any) -> str:
    return str(v)


def inet_value(v: Any) -> str:
    """inet/cidr as PostgreSQL prints them (psycopg gives ipaddress objects).

    Python prints ::ffff:1.2.3.4 as ::ffff:102:304 (before 3.13) and ::1.2.3.4 as
    ::102:304; PostgreSQL (BIND's inet_ntop) writes the IPv4 part in dotted form
    when the first 80 bits are zero and the next 16 are ffff, or zero followed by
    a non-zero word. Every other address prints alike.
    """
    text = str(v)
    if ":" not in text:
        return text
    address, slash, prefix = text.partition("/")
    packed = ipaddress.IPv6Address(address).packed
    if packed[:10] == bytes(10) and (packed[10:12] == b"\xff\xff" or (packed[10:12] == b"\0\0" and packed[12:14] != b"\0\0")):
        address = ("::ffff:" if packed[10] else "::") + str(ipaddress.IPv4Address(packed[12:]))
    return address + slash + prefix


PAYLOAD_CONVERTERS: dict[PayloadKind, Callable[[Any], Any]] = {
    PayloadKind.INT: _identity,
    PayloadKind.BOOL: _identity,
    PayloadKind.FLOAT4: float4_value,
    PayloadKind.FLOAT8: float8_value,
    PayloadKind.NUMERIC: numeric_value,
    PayloadKind.TEXT: text_value,
    PayloadKind.TEXT_FORM: text_value,
    PayloadKind.JSON: _identity,  # parsed by psycopg with json_loads below
    PayloadKind.UUID: _to_str,
    PayloadKind.INET: inet_value,
    PayloadKind.BYTEA: bytea_value,
    # Date/time kinds are decoded straight to their text by source.adapters, which
    # calls the formatting functions below (they are part of the mapping).
    PayloadKind.TIMESTAMPTZ: _identity,
    PayloadKind.TIMESTAMP: _identity,
    PayloadKind.DATE: _identity,
    PayloadKind.TIME: _identity,
    PayloadKind.TIMETZ: _identity,
    PayloadKind.INTERVAL: _identity,
}


def payload_converter(kind: PayloadKind, *, array: bool = False) -> Callable[[Any], Any]:
    """The function converting one non-NULL value of ``kind`` (arrays: element-wise, any depth)."""
    element = PAYLOAD_CONVERTERS[kind]
    if not array:
        return element

    def convert_array(values: list) -> list:
        return [None if x is None else (convert_array(x) if isinstance(x, list) else element(x))
                for x in values]

    return convert_array
