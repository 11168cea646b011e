"""Pure unit tests of every conversion in pg2qdrant.mapping (no server needed)."""

from __future__ import annotations

import math
import struct
import uuid
from decimal import Decimal

import numpy as np
import pytest

from pg2qdrant.core.mapping import ids, json_values, scalars, temporal, vectors
from pg2qdrant.core.plan import KeySpec, PayloadKind


def key(kinds=("int",), mode="native"):
    cols = tuple(f"k{i}" for i in range(len(kinds)))
    return KeySpec(cols, tuple(kinds), tuple(range(len(kinds))), mode, True, "test")


# --- point IDs -----------------------------------------------------------------------------

def test_reference_tool_hashes_integer_42_to_this_uuid():
    # The reference tool (qdrant-migration) hashes every key, integers too: uuid5(NAMESPACE_URL, "42").
    assert ids.uuid5_of_text("42") == "5c2b23de-4bad-58ee-a4b3-f22f3b9cfd7d"
    assert ids.make_point_id(key(mode="reference"), [42]) == "5c2b23de-4bad-58ee-a4b3-f22f3b9cfd7d"


@pytest.mark.parametrize("value,expected", [(0, 0), (42, 42), (2**63 - 1, 2**63 - 1)])
def test_native_nonnegative_integers_stay_integers(value, expected):
    pid = ids.make_point_id(key(), [value])
    assert pid == expected and isinstance(pid, int)


def test_native_negative_integer_is_uuid5_of_its_text():
    assert ids.make_point_id(key(), [-5]) == str(uuid.uuid5(uuid.NAMESPACE_URL, "-5"))


def test_uuid_key_is_the_uuid():
    u = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
    assert ids.make_point_id(key(("uuid",)), [u]) == "550e8400-e29b-41d4-a716-446655440000"


@pytest.mark.parametrize("text,expected", [
    ("550E8400-E29B-41D4-A716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ("urn:uuid:550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ("URN:UUID:550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    ("{550e8400-e29b-41d4-a716-446655440000}", "550e8400-e29b-41d4-a716-446655440000"),
    # Go's Parse does not check the wrapper characters of the 38-byte form.
    ("x550e8400-e29b-41d4-a716-446655440000y", "550e8400-e29b-41d4-a716-446655440000"),
    ("550e8400e29b41d4a716446655440000", "550e8400-e29b-41d4-a716-446655440000"),
])
def test_text_keys_that_go_parses_as_uuid_are_used_as_is(text, expected):
    assert ids.make_point_id(key(("text",)), [text]) == expected
    assert ids.make_point_id(key(("text",), mode="reference"), [text]) == expected


@pytest.mark.parametrize("text", [
    "abc", "", "550e8400-e29b-41d4-a716-44665544000",  # 35 chars
    "550e8400e29b-41d4-a716-4466554400000",  # dashes misplaced
    "{550e8400e29b41d4a716446655440000}",  # Python accepts, Go does not (34 bytes)
    "550e8400-e29b-41d4-a716-44665544000g",  # not hex
    "é50e8400-e29b-41d4-a716-44665544000",  # 36 chars but 37 bytes
])
def test_other_text_keys_are_uuid5_of_the_text(text):
    assert ids.make_point_id(key(("text",)), [text]) == str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def test_composite_keys_do_not_collide_on_separators():
    k = key(("text", "text"))
    a = ids.make_point_id(k, ["a_b", "c"])
    b = ids.make_point_id(k, ["a", "b_c"])
    assert a != b
    assert a == str(uuid.uuid5(uuid.NAMESPACE_URL, '["a_b","c"]'))


def test_composite_key_with_integers_uses_their_text():
    assert ids.make_point_id(key(("int", "text")), [7, "x"]) == ids.uuid5_of_text('["7","x"]')


# --- scalar payload values --------------------------------------------------------------------

def test_float4_is_the_shortest_decimal_of_the_float32():
    widened = struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert widened != 0.1
    assert scalars.float4_value(widened) == 0.1
    for x in (1.0, 3.4028234663852886e38, 1.401298464324817e-45, -2.5, 123456.789):
        f32 = struct.unpack("<f", struct.pack("<f", x))[0]
        out = scalars.float4_value(f32)
        assert struct.pack("<f", out) == struct.pack("<f", f32)
        assert isinstance(out, float)


@pytest.mark.parametrize("v,expected", [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")])
def test_nonfinite_floats_become_postgres_spelling(v, expected):
    assert scalars.float8_value(v) == expected
    assert scalars.float4_value(v) == expected


def test_float8_keeps_value():
    assert scalars.float8_value(0.1) == 0.1 and scalars.float8_value(-1e308) == -1e308


@pytest.mark.parametrize("text,expected", [
    ("42", 42), ("-7", -7), ("0", 0), ("12.50", 12.5), ("0.1", 0.1), ("-3.25", -3.25),
    ("9223372036854775807", 9223372036854775807),
    ("9223372036854775808", "9223372036854775808"),  # beyond int64: digits kept as text
    ("0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827"),
    ("123456789012345678901234567890.123", "123456789012345678901234567890.123"),
    ("1E-7", 1e-07), ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
])
def test_numeric_is_number_when_exact_else_text(text, expected):
    out = scalars.numeric_value(Decimal(text))
    assert out == expected
    assert type(out) is type(expected)


def test_numeric_integral_values_are_ints_not_floats():
    assert isinstance(scalars.numeric_value(Decimal("100")), int)


def test_text_from_sql_ascii_with_invalid_utf8_does_not_crash():
    assert scalars.text_value(b"caf\xe9") == "caf\ufffd"
    assert scalars.text_value(b"ok") == "ok"
    assert scalars.text_value("plain") == "plain"


def test_bytea_is_base64():
    assert scalars.bytea_value(b"\x00\xffhello") == "AP9oZWxsbw=="
    # 16-byte values stay bytes (the reference mistook them for UUIDs).
    assert scalars.bytea_value(bytes(range(16))) == "AAECAwQFBgcICQoLDA0ODw=="


def test_json_loads_keeps_big_integers_and_huge_numbers():
    assert json_values.json_loads('{"a": 12345678901234567890, "b": 1.5, "c": 1e400, "d": [null, true]}') == {
        "a": "12345678901234567890", "b": 1.5, "c": "1e400", "d": [None, True]}


@pytest.mark.parametrize("token, expected", [
    ("9223372036854775807", 9223372036854775807), ("-9223372036854775808", -9223372036854775808),
    ("9223372036854775808", "9223372036854775808"), ("-9223372036854775809", "-9223372036854775809"),
    ("18446744073709551616", "18446744073709551616"),  # 2**64: a double holds it, its shortest text is not it
    ("1e308", 1e308), ("1.5e300", 1.5e300), ("1e309", "1e309"),
    ("1e-400", "1e-400"), ("2e-324", "2e-324"),  # underflow: a double would say 0.0
    ("5e-324", 5e-324), ("0e-400", 0.0),
    ("0.1", 0.1), ("1.0", 1.0), ("1.50", 1.5), ("1E2", 100.0), ("100.0", 100.0), ("-0", 0),
    ("0.1000000000000000055511151231257827", "0.1000000000000000055511151231257827"),
])
def test_json_numbers_follow_the_numeric_rule(token, expected):
    value = json_values.json_loads(f"[{token}]")[0]
    assert value == expected and type(value) is type(expected)
    negative_zero = json_values.json_loads("-0.0")
    assert type(negative_zero) is float and math.copysign(1, negative_zero) == -1


def test_array_converter_recurses_and_keeps_nulls():
    conv = scalars.payload_converter(PayloadKind.NUMERIC, array=True)
    assert conv([[Decimal("1"), None], [Decimal("2.5"), Decimal("NaN")]]) == [[1, None], [2.5, "NaN"]]
    assert scalars.payload_converter(PayloadKind.FLOAT4, array=True)([struct.unpack("<f", struct.pack("<f", 0.1))[0]]) == [0.1]


# --- dates and times ------------------------------------------------------------------------

US = 1_000_000
DAY = 86_400 * US


@pytest.mark.parametrize("usecs,utc,expected", [
    (0, True, "2000-01-01T00:00:00.000000Z"),
    (-1, True, "1999-12-31T23:59:59.999999Z"),
    (DAY + 3_723_000_456, False, "2000-01-02T01:02:03.000456"),
    (2**63 - 1, True, "infinity"),
    (-(2**63), False, "-infinity"),
])
def test_format_timestamp(usecs, utc, expected):
    assert temporal.format_timestamp(usecs, utc=utc) == expected


def test_format_timestamp_years_outside_python_range():
    # 8000 Gregorian years are exactly 20 cycles of 146,097 days.
    assert temporal.format_timestamp(2_921_940 * DAY, utc=True) == "+10000-01-01T00:00:00.000000Z"
    # 2000 years back: 0000-01-01 (1 BC in astronomical numbering), a leap year.
    assert temporal.format_date(-730_485) == "0000-01-01"
    assert temporal.format_date(-730_485 + 59) == "0000-02-29"
    assert temporal.format_date(-730_485 - 1) == "-0001-12-31"


def test_civil_from_days_matches_python_date_everywhere_python_can_check():
    import datetime as dt
    base = dt.date(1970, 1, 1)
    for days in list(range(-719162, 2932896, 9973)) + [-719162, 2932896]:
        d = base + dt.timedelta(days=days)
        assert temporal._civil_from_days(days) == (d.year, d.month, d.day)


def test_format_date():
    assert temporal.format_date(0) == "2000-01-01"
    assert temporal.format_date(-1) == "1999-12-31"
    assert temporal.format_date(2**31 - 1) == "infinity"
    assert temporal.format_date(-(2**31)) == "-infinity"


def test_format_time_and_timetz():
    assert temporal.format_time(0) == "00:00:00.000000"
    assert temporal.format_time(24 * 3600 * US) == "24:00:00.000000"
    assert temporal.format_time(13 * 3600 * US + 5 * 60 * US + 7 * US + 8) == "13:05:07.000008"
    # PostgreSQL stores +02 as -7200 seconds (west of UTC).
    assert temporal.format_timetz(0, -7200) == "00:00:00.000000+02:00"
    assert temporal.format_timetz(0, 19800) == "00:00:00.000000-05:30"
    assert temporal.format_timetz(0, -(5 * 3600 + 30 * 60 + 15)) == "00:00:00.000000+05:30:15"


@pytest.mark.parametrize("usecs,days,months,expected", [
    (0, 0, 0, "PT0S"),
    (0, 0, 14, "P1Y2M"),
    (0, 3, 0, "P3D"),
    (4 * 3600 * US + 5 * 60 * US + 6 * US + 500_000, 0, 0, "PT4H5M6.5S"),
    (1, 0, 0, "PT0.000001S"),
    (-(6 * US + 500_000), 0, 0, "PT-6.5S"),
    (-(3600 * US), -1, -13, "P-1Y-1M-1DT-1H"),
])
def test_format_interval_iso8601(usecs, days, months, expected):
    assert temporal.format_interval(usecs, days, months) == expected


# --- vectors ------------------------------------------------------------------------------

def vec_blob(values, fmt=">f4"):
    arr = np.asarray(values, dtype=fmt)
    return struct.pack(">HH", len(values), 0) + arr.tobytes()


def test_decode_dense_bit_exact_with_nulls():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(5, 7)).astype(np.float32)
    blobs = [vec_blob(r) for r in rows]
    blobs[2] = None
    col = vectors.decode_dense(blobs, 7)
    assert col.present.tolist() == [True, True, False, True, True]
    assert col.values.dtype == np.float32
    for i in (0, 1, 3, 4):
        assert col.values[i].tobytes() == rows[i].tobytes()


def test_decode_half_is_exact_float16():
    vals = np.array([0.1, -2.5, 65504, 6e-8], dtype=np.float16)
    col = vectors.decode_half([struct.pack(">HH", 4, 0) + vals.astype(">f2").tobytes()], 4)
    assert col.values[0].astype(np.float16).tobytes() == vals.tobytes()


def test_decode_dense_dimension_mismatch_names_rows():
    blobs = [vec_blob([1, 2, 3]), vec_blob([1, 2]), None, vec_blob([1, 2, 3, 4])]
    with pytest.raises(vectors.DimensionMismatch) as exc:
        vectors.decode_dense(blobs, 3)
    assert exc.value.rows == [1, 3]
    assert exc.value.dims == [2, 4]


def test_decode_bit_msb_first():
    # B'101000001' : 9 bits -> 2 bytes 0b10100000 0b10000000
    blob = struct.pack(">i", 9) + bytes([0b10100000, 0b10000000])
    col = vectors.decode_bit([blob, None], 9)
    assert col.values[0].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 1]
    assert col.values.dtype == np.uint8
    assert col.present.tolist() == [True, False]


def test_decode_sparse_zero_based_indices():
    # pgvector text {1:0.5,7:2}/10 is 1-based; the binary form carries 0-based indices.
    blob = struct.pack(">iii", 10, 2, 0) + struct.pack(">ii", 0, 6) + struct.pack(">ff", 0.5, 2.0)
    (value, none) = vectors.decode_sparse([blob, None])
    assert none is None
    assert value.indices.tolist() == [0, 6]
    assert value.values.tolist() == [0.5, 2.0]
    assert value.indices.dtype == np.uint32


def test_inet_prints_embedded_ipv4_as_postgres_does():
    import ipaddress

    conv = scalars.payload_converter(PayloadKind.INET)
    assert conv(ipaddress.ip_address("::ffff:1.2.3.4")) == "::ffff:1.2.3.4"  # Python: ::ffff:102:304
    assert conv(ipaddress.ip_interface("::1.2.3.4/120")) == "::1.2.3.4/120"
    assert conv(ipaddress.ip_network("::ffff:0:0/96")) == "::ffff:0.0.0.0/96"
    assert conv(ipaddress.ip_address("::1")) == "::1"
    assert conv(ipaddress.ip_network("2001:db8::/32")) == "2001:db8::/32"
    assert conv(ipaddress.ip_interface("192.168.0.1/24")) == "192.168.0.1/24"


@pytest.mark.parametrize("shortest", [
    1e-45,  # the smallest subnormal: one significant bit (was 1.4013e-45)
    5.0816768e+07,  # 5.081677e+07 is exactly halfway to the next float4: PostgreSQL does not print it
    -0.00024414062,  # -2**-12: both 8-digit neighbours equally near, the even digit wins
    3.4028235e+38, 0.1, 1.1754944e-38,
])
def test_float4_is_the_shortest_decimal_postgres_prints(shortest):
    widened = struct.unpack("<f", struct.pack("<f", shortest))[0]
    assert repr(scalars.float4_value(widened)) == repr(shortest)
