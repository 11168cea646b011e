"""Point IDs from table keys: integers stay integers, UUIDs stay UUIDs, other text (and composite keys)
become uuid5 of their text, as the reference tool computes them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from pg2qdrant.core.errors import DataError
from pg2qdrant.core.plan import KeyKind, KeySpec, Plan

PointId = int | str
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


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
