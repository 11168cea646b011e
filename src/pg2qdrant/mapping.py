"""Row -> point: point IDs, payload values and vectors. Pure: no I/O.

Every flow (migrate, verify, sync) converts through this module, so a value
is converted one way only. The functions take what psycopg's binary loaders
produce (plus the raw pgvector wire bytes, decoded here in bulk with numpy)
and return what Qdrant stores. See README "Mapping rules" for the table.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import math
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from pg2qdrant.errors import DataError
from pg2qdrant.plan import KeyKind, KeySpec, PayloadKind, Plan, VectorKind, VectorSpec

PointId = int | str
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

# ---------------------------------------------------------------------------------------
# Point IDs
# ---------------------------------------------------------------------------------------

_HEX = set("0123456789abcdefABCDEF")


def go_uuid_parse(text: str) -> uuid.UUID | None:
    """Parse a UUID exactly as Go's github.com/google/uuid ``Parse`` does, else None.

    The reference tool decides "is this key already a UUID?" with that function,
    so to address the points it made we must accept exactly the same strings:
    36 chars with dashes, the ``urn:uuid:`` prefix, 38 chars (any wrapper: Go
    does not check the braces) and 32 plain hex digits. Lengths are in bytes.
    """
    raw = text.encode("utf-8", "surrogatepass")
    n = len(raw)
    if n == 32:
        s = raw.decode("latin-1")
        return uuid.UUID(hex=s) if set(s) <= _HEX else None
    if n == 45:
        if raw[:9].lower() != b"urn:uuid:":
            return None
        raw = raw[9:]
    elif n == 38:
        raw = raw[1:]
    elif n != 36:
        return None
    s = raw[:36].decode("latin-1")
    if s[8] != "-" or s[13] != "-" or s[18] != "-" or s[23] != "-":
        return None
    digits = s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
    if not set(digits) <= _HEX:
        return None
    return uuid.UUID(hex=digits)


def uuid5_of_text(text: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def _text_id(text: str) -> str:
    parsed = go_uuid_parse(text)
    return str(parsed) if parsed is not None else uuid5_of_text(text)


def _key_text(value: Any) -> str:
    if isinstance(value, bytes):  # text from a SQL_ASCII database
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def composite_key_text(values: Sequence[Any]) -> str:
    """Unambiguous text of a composite key: a JSON array of each part's text form.

    ("a_b", "c") and ("a", "b_c") must not collide, so parts are not joined
    with a separator that can occur inside them.
    """
    return json.dumps([_key_text(v) for v in values], ensure_ascii=False, separators=(",", ":"))


def normalize_point_id(pid: Any) -> PointId:
    """A point ID as compared and reported: the int, or canonical lower-case UUID text
    (whatever object a target returns a UUID ID as)."""
    return pid if isinstance(pid, int) else str(pid).lower()


def make_point_id(key: KeySpec, values: Sequence[Any]) -> PointId:
    """Point ID of one row from its key values (in ``key.columns`` order)."""
    if len(values) > 1:
        return uuid5_of_text(composite_key_text(values))
    value = values[0]
    kind = key.kinds[0]
    if key.mode == "reference":
        return _text_id(_key_text(value))
    if kind == KeyKind.INT:
        return value if 0 <= value <= UINT64_MAX else uuid5_of_text(str(value))
    if kind == KeyKind.UUID:
        return str(value)
    if key.mode == "hash":
        return uuid5_of_text(_key_text(value))
    return _text_id(_key_text(value))


def keys_can_share_ids(key: KeySpec) -> bool:
    """Whether distinct keys can map to one point ID.

    Only a single text key read as a UUID when it looks like one: Go's parser (kept for the
    reference tool's IDs) reads '<uuid>', '<UUID>', '{<uuid>}' (any 38-byte wrapper),
    'urn:uuid:<uuid>' and the 32 bare digits as the same UUID. Integer, uuid and composite
    keys (uuid5 of a JSON array) cannot collide.
    """
    return len(key.columns) == 1 and key.kinds[0] == KeyKind.TEXT and key.mode != "hash"


def uuid_of_key(value: Any) -> uuid.UUID | None:
    """The UUID a text key is read as (None: it is hashed instead)."""
    return go_uuid_parse(_key_text(value))


def shared_id_error(plan: Plan, groups: Sequence[tuple[PointId, Sequence[Any]]]) -> DataError:
    """Distinct keys that would share a point: each write overwrites the other row, a delete removes both."""
    column = plan.key.columns[0]
    shown = "; ".join(f"{', '.join(repr(_key_text(k)) for k in keys)} (point {pid})" for pid, keys in groups)
    return DataError(
        f"Key column {column} of {plan.table.display} holds different values that are read as the same "
        f"UUID, so their rows would share one point (each overwrites the other, and deleting one row "
        f"deletes the other's point): {shown}.",
        fix=f"give each row its own UUID (e.g. keep one spelling per UUID in {column}), choose another key "
            "with --pg.key-column, or pass --migration.id-mode hash to hash every text key as written "
            "(other point IDs: write to a new collection).",
    )


# ---------------------------------------------------------------------------------------
# Payload values (each function takes a non-NULL value as psycopg decodes it)
# ---------------------------------------------------------------------------------------

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


def json_loads(data: str | bytes) -> Any:
    """JSON parser for json/jsonb, numbers by numeric's rule (README "Mapping rules").

    An integer stays an int when it fits int64 (what Qdrant stores); a number with
    a fraction or exponent becomes a float when the float's shortest decimal equals
    it. Any other number (2**64, 1e-400 that would become 0.0, 1e400 that would
    become infinity) keeps its text exactly as PostgreSQL gave it, as a string.
    """
    return json.loads(data, parse_float=_json_float, parse_int=_json_int)


def _json_int(text: str) -> int | str:
    i = int(text)
    return i if INT64_MIN <= i <= INT64_MAX else text


def _json_float(text: str) -> float | str:
    f = float(text)
    if math.isfinite(f):
        shortest = repr(f)
        # repr(f) == text is the common case (2.5, 0.1); Decimal decides the rest (1.50, 1E2).
        if shortest == text or Decimal(shortest) == Decimal(text):
            return f
    return text


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


# ---------------------------------------------------------------------------------------
# Date and time text forms, from PostgreSQL's binary representation (µs since 2000-01-01)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Vectors: pgvector binary wire formats, decoded a batch at a time
# ---------------------------------------------------------------------------------------

@dataclass
class DenseColumn:
    """One named dense vector for a batch: rows in ``values``, ``present[i]`` False for NULL."""

    values: np.ndarray  # (n, dim) float32, or uint8 for bit vectors; NULL rows are zeros
    present: np.ndarray  # (n,) bool

    @property
    def all_present(self) -> bool:
        return bool(self.present.all())


@dataclass(frozen=True)
class SparseValue:
    indices: np.ndarray  # uint32, 0-based, ascending
    values: np.ndarray  # float32


class DimensionMismatch(Exception):
    """Raised by a decoder with the row positions whose dimension differs."""

    def __init__(self, rows: list[int], dims: list[int], expected: int):
        self.rows, self.dims, self.expected = rows, dims, expected
        super().__init__(f"dimension {dims[0]} != {expected}")


def _dense_from_blobs(blobs: list[bytes | None], dim: int, header: int, dtype: str) -> DenseColumn:
    """vector: int16 dim, int16 unused, dim x float32; halfvec: same with float16 (big-endian)."""
    n = len(blobs)
    present = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = header + dim * itemsize
    if present.all() and n:
        sizes = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=n)
        if (sizes == row_bytes).all():
            buf = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, row_bytes)
            dims = buf[:, 0].astype(np.int32) << 8 | buf[:, 1]
            if (dims == dim).all():
                values = buf[:, header:].copy().view(dtype).astype(np.float32)
                return DenseColumn(values, present)
    values = np.zeros((n, dim), dtype=np.float32)
    if present.any():
        live = [b for b in blobs if b is not None]
        sizes = np.fromiter((len(b) for b in live), dtype=np.int64, count=len(live))
        if (sizes != row_bytes).any():
            _raise_dimension(blobs, present, sizes, row_bytes, header, itemsize, dim)
        buf = np.frombuffer(b"".join(live), dtype=np.uint8).reshape(len(live), row_bytes)
        dims = buf[:, 0].astype(np.int32) << 8 | buf[:, 1]
        if (dims != dim).any():
            _raise_dimension(blobs, present, dims * itemsize + header, row_bytes, header, itemsize, dim)
        values[present] = buf[:, header:].copy().view(dtype).astype(np.float32)
    return DenseColumn(values, present)


def _raise_dimension(blobs, present, sizes, row_bytes, header, itemsize, dim) -> None:
    live_rows = np.flatnonzero(present)
    bad = np.flatnonzero(sizes != row_bytes)
    rows = [int(live_rows[i]) for i in bad[:5]]
    dims = [int((sizes[i] - header) // itemsize) for i in bad[:5]]
    raise DimensionMismatch(rows, dims, dim)


def decode_dense(blobs: list[bytes | None], dim: int) -> DenseColumn:
    return _dense_from_blobs(blobs, dim, 4, ">f4")


def decode_half(blobs: list[bytes | None], dim: int) -> DenseColumn:
    # float16 -> float32 is exact, and Qdrant stores the column as float16 again.
    return _dense_from_blobs(blobs, dim, 4, ">f2")


def decode_bit(blobs: list[bytes | None], nbits: int) -> DenseColumn:
    """bit(n): int32 bit count, then ceil(n/8) bytes, most significant bit first -> 0/1 uint8."""
    n = len(blobs)
    present = np.fromiter((b is not None for b in blobs), dtype=bool, count=n)
    values = np.zeros((n, nbits), dtype=np.uint8)
    nbytes = (nbits + 7) // 8
    row_bytes = 4 + nbytes
    live = [b for b in blobs if b is not None]
    if live:
        sizes = np.fromiter((len(b) for b in live), dtype=np.int64, count=len(live))
        counts = np.array([int.from_bytes(b[:4], "big") for b in live], dtype=np.int64)
        if (sizes != row_bytes).any() or (counts != nbits).any():
            live_rows = np.flatnonzero(present)
            bad = np.flatnonzero((sizes != row_bytes) | (counts != nbits))
            raise DimensionMismatch([int(live_rows[i]) for i in bad[:5]], [int(counts[i]) for i in bad[:5]], nbits)
        buf = np.frombuffer(b"".join(live), dtype=np.uint8).reshape(len(live), row_bytes)
        values[present] = np.unpackbits(buf[:, 4:], axis=1)[:, :nbits]
    return DenseColumn(values, present)


_SPARSE_HEAD = struct.Struct(">iii")


def decode_sparse_one(blob: bytes) -> SparseValue:
    """sparsevec: int32 dim, int32 nnz, int32 unused, nnz x int32 index (0-based), nnz x float32."""
    _dim, nnz, _ = _SPARSE_HEAD.unpack_from(blob, 0)
    indices = np.frombuffer(blob, dtype=">i4", count=nnz, offset=12).astype(np.uint32)
    values = np.frombuffer(blob, dtype=">f4", count=nnz, offset=12 + 4 * nnz).astype(np.float32)
    return SparseValue(indices, values)


def decode_sparse(blobs: list[bytes | None]) -> list[SparseValue | None]:
    return [None if b is None else decode_sparse_one(b) for b in blobs]


# ---------------------------------------------------------------------------------------
# Rows -> a batch of points
# ---------------------------------------------------------------------------------------

@dataclass
class PointBatch:
    """Points ready for a target: parallel lists, vectors kept as numpy arrays."""

    ids: list[PointId]
    payloads: list[dict[str, Any]]
    dense: dict[str, DenseColumn] = field(default_factory=dict)
    sparse: dict[str, list[SparseValue | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def vectors_of(self, i: int) -> dict[str, Any]:
        """Named vectors of point ``i`` (NULL vectors are absent), as numpy rows / SparseValue."""
        out: dict[str, Any] = {}
        for name, col in self.dense.items():
            if col.present[i]:
                out[name] = col.values[i]
        for name, values in self.sparse.items():
            if values[i] is not None:
                out[name] = values[i]
        return out

    def points(self, make_sparse: Callable[[list[int], list[float]], Any], *,
               buffers: bool = False) -> Iterator[tuple[PointId, dict, dict]]:
        """(id, named vectors, payload) per point; NULL vectors are left out.

        Dense vectors are float lists (what qdrant-client serialises), or with
        ``buffers=True`` float32 memoryviews of the batch's array: Qdrant Edge reads
        those without creating a Python float per component (~2.5x cheaper per point).
        """
        dense = []
        for name, col in self.dense.items():
            values = np.ascontiguousarray(col.values, dtype=np.float32)
            rows = [memoryview(r) for r in values] if buffers else values.tolist()
            dense.append((name, rows, col.present))
        for i, pid in enumerate(self.ids):
            vector: Any = {name: rows[i] for name, rows, present in dense if present[i]}
            for name, values in self.sparse.items():
                value = values[i]
                if value is not None:
                    vector[name] = make_sparse(value.indices.tolist(), value.values.tolist())
            if len(vector) == 1 and "" in vector:  # Qdrant's unnamed default vector goes as a plain list
                vector = vector[""]
            yield pid, vector, self.payloads[i]

    def point_sizes(self) -> list[int]:
        """Estimated request bytes of each point (JSON floats: ~12 bytes each), to stay under
        a server's request size limit."""
        fixed = sum(c.values.shape[1] * 12 for c in self.dense.values())
        sizes = [64 + fixed + len(json.dumps(p, default=str)) for p in self.payloads]
        for values in self.sparse.values():
            for i, v in enumerate(values):
                if v is not None:
                    sizes[i] += 20 * len(v.indices)
        return sizes

    def slice(self, start: int, stop: int) -> PointBatch:
        return PointBatch(
            ids=self.ids[start:stop], payloads=self.payloads[start:stop],
            dense={n: DenseColumn(c.values[start:stop], c.present[start:stop]) for n, c in self.dense.items()},
            sparse={n: v[start:stop] for n, v in self.sparse.items()},
        )


class RowMapper:
    """Converts rows (tuples in ``plan.reads`` order) into a :class:`PointBatch`."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.key = plan.key
        self._payload = [(p.name, p.read_index, payload_converter(p.kind, array=p.array))
                         for p in plan.payload]
        self._vectors = list(plan.vectors)

    def point_id(self, row: Sequence[Any]) -> PointId:
        values = [row[i] for i in self.key.read_indexes]
        if any(v is None for v in values):
            raise DataError(
                f"Key column(s) {', '.join(self.key.columns)} of {self.plan.table.display} hold NULL "
                f"in a row (other columns: {self._describe_row(row)}).",
                fix="every row needs a key: fill the NULLs, or choose a NOT NULL unique column "
                    "with --pg.key-column.",
            )
        return make_point_id(self.key, values)

    def _describe_row(self, row: Sequence[Any]) -> str:
        shown = [f"{p.name}={row[p.read_index]!r}" for p in self.plan.payload[:3]]
        return ", ".join(shown)[:200]

    def key_text(self, row: Sequence[Any]) -> str:
        values = [row[i] for i in self.key.read_indexes]
        return ", ".join(f"{c}={v!r}" for c, v in zip(self.key.columns, values))

    # complexity: the hot loop of every flow: one branch per column kind, inline rather than a call per value.
    def map_rows(self, rows: Sequence[Sequence[Any]]) -> PointBatch:
        ids = [self.point_id(r) for r in rows]
        # Column by column: one list comprehension per converted column, none for the
        # columns whose decoded value is already the payload value (ints, bools, json...).
        names = [name for name, _, _ in self._payload]
        columns = []
        for _name, idx, convert in self._payload:
            values = [r[idx] for r in rows]
            if convert is not _identity:
                values = [None if v is None else convert(v) for v in values]
            columns.append(values)
        payloads = [dict(zip(names, vals)) for vals in zip(*columns)] if columns else [{} for _ in rows]
        if self.plan.payload_keys or self.plan.payload_shape:
            from pg2qdrant.layouts import shape_payloads  # renames, nesting, framework shapers
            payloads = shape_payloads(self.plan, payloads)
        batch = PointBatch(ids=ids, payloads=payloads)
        for spec in self._vectors:
            blobs = [r[spec.read_index] for r in rows]
            try:
                decoded = decode_vector_column(spec, blobs)
            except DimensionMismatch as exc:
                raise self._dimension_error(spec, rows, exc) from None
            if spec.is_sparse:
                batch.sparse[spec.name] = decoded
            else:
                batch.dense[spec.name] = decoded
        return batch

    def _dimension_error(self, spec: VectorSpec, rows, exc: DimensionMismatch) -> DataError:
        examples = "; ".join(f"{self.key_text(rows[i])} has {d}" for i, d in zip(exc.rows, exc.dims))
        how = "the column is declared without a dimension and" if spec.size_from_data else "the"
        return DataError(
            f"Vector column {spec.column} ({spec.declared}) does not have one dimension: {how} "
            f"collection uses {exc.expected}, but {examples}.",
            fix=f"make all rows of {spec.column} the same dimension (or declare it {spec.column} "
                f"vector({exc.expected}) and fix the odd rows), or leave it out with --pg.columns.",
        )


def decode_vector_column(spec: VectorSpec, blobs: list[bytes | None]):
    if spec.kind == VectorKind.SPARSE:
        return decode_sparse(blobs)
    if spec.size is None:
        raise ValueError(f"vector {spec.name} has no size yet")  # the planner fills it first
    if spec.kind == VectorKind.DENSE:
        return decode_dense(blobs, spec.size)
    if spec.kind == VectorKind.HALF:
        return decode_half(blobs, spec.size)
    return decode_bit(blobs, spec.size)
