"""Framework layouts, and the generic options they are built from.

Most pgvector tables were written by a framework (LangChain, LlamaIndex, Supabase vecs,
pgai), and their owners want the framework's own Qdrant store to open the copy with its
defaults (vecs and pgai have none: their copies are shaped for qdrant-client, see
:data:`READ_BY`). A layout is one :class:`Layout` entry in :data:`LAYOUTS`: the table shape it
recognises, and how that shape maps onto the generic options

- ``--pg.where SQL``: only rows matching the condition (:func:`check_where`, :func:`validate_where`);
- ``--qdrant.vector-name column=name`` (``""``: Qdrant's unnamed default vector);
- ``--qdrant.payload-key column=key``: rename; ``a.b`` nests, ``*`` spreads a JSON object's keys
  at the top level, an empty key leaves the column out of the payload;
- ``--qdrant.tenant-column column``: a keyword payload index with ``is_tenant=true``;

plus, where a framework needs more than renaming, a named payload shaper
(:data:`SHAPERS`, applied by :func:`shape_payloads` after the generic keys). A new
framework is one new entry; nothing else in the code branches on frameworks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any

from pg2qdrant.core.errors import DataError, InputError
from pg2qdrant.core.options import Bm25Options
from pg2qdrant.core.plan import TENANT_INDEX, PayloadIndexSpec, PayloadKind, bm25_vectors

LAYOUT_NAMES = ("auto", "plain", "langchain", "langchain-v2", "llamaindex", "vecs", "pgai")
SPREAD = "*"  # payload key: spread a JSON object's keys at the top level of the payload

# --------------------------------------------------------------------------------------
# Generic options
# --------------------------------------------------------------------------------------


def parse_pairs(values: Iterable[str] | None, flag: str, *, example: str) -> dict[str, str]:
    """``column=name`` items (repeatable or comma-separated); the name may be empty."""
    out: dict[str, str] = {}
    for raw in values or ():
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise InputError(f"{flag} {item!r} is not in the form column=name.", fix=f"write e.g. {flag} {example}.")
            column, name = item.split("=", 1)
            out[column.strip()] = name.strip()
    return out


# complexity: applies each generic option (where, vector names, payload keys, tenant, shape, indexes) in the one order
# they depend on each other.
def apply_options(plan, *, where: str | None = None, vector_names: dict[str, str] | None = None,
                  payload_keys: dict[str, str] | None = None, tenant_column: str | None = None,
                  payload_shape: str | None = None, extra_indexes: Iterable[tuple[str, str]] = (),
                  notes: Iterable[str] = (), bm25: dict[str, str] | None = None,
                  bm25_options: Bm25Options | None = None, bm25_source: str = "--qdrant.bm25"):
    """The plan with the generic options (and a layout's extras) applied; raises InputError.

    ``where`` must already be validated (validate_where) on the same table.
    """
    vector_names = dict(vector_names or {})
    payload_keys = dict(payload_keys or {})
    payload_by_column = {p.column: p for p in plan.payload}
    for flag, names, known in (("--qdrant.vector-name", vector_names, {v.column for v in plan.vectors}),
                               ("--qdrant.payload-key", payload_keys, payload_by_column)):
        unknown = [c for c in names if c not in known]
        if unknown:
            raise InputError(f"{flag} names {', '.join(map(repr, unknown))}, which is not a migrated "
                             f"{'vector' if 'vector' in flag else 'payload'} column.",
                             fix=f"such columns are: {', '.join(known) or 'none'}.")
    vectors = _named_vectors(plan.vectors, vector_names)
    _check_payload_keys(payload_keys, payload_by_column)
    indexes = list(plan.payload_indexes)
    if tenant_column:
        indexes = [i for i in indexes if i.field != tenant_column]
        indexes.insert(0, _tenant_index(tenant_column, payload_keys, payload_by_column))
    indexes = _indexes_by_key(indexes, payload_keys, payload_by_column)
    for field_name, typ in extra_indexes:
        if all(i.field != field_name for i in indexes):
            indexes.append(PayloadIndexSpec(field_name, typ, "framework layout"))
    keys = tuple((c, k) for c, k in payload_keys.items() if k != c)
    plan = dataclasses.replace(plan, vectors=vectors, where=where or None, payload_keys=keys,
                               payload_shape=payload_shape, payload_indexes=tuple(indexes),
                               warnings=plan.warnings + tuple(notes))
    if bm25:
        plan = dataclasses.replace(plan, bm25=bm25_vectors(plan, bm25, bm25_options or Bm25Options(),
                                                           source=bm25_source))
    return plan


def _named_vectors(vectors, vector_names: dict[str, str]) -> tuple:
    """The vectors renamed by --qdrant.vector-name (distinct names; "" only for a dense one)."""
    renamed = tuple(dataclasses.replace(v, name=vector_names.get(v.column, v.name)) for v in vectors)
    names = [v.name for v in renamed]
    if len(set(names)) != len(names):
        raise InputError(f"--qdrant.vector-name gives two vectors the same name ({', '.join(map(repr, names))}).",
                         fix="give each vector column its own name (only one may be the unnamed vector \"\").")
    if any(v.is_sparse and v.name == "" for v in renamed):
        raise InputError("--qdrant.vector-name: a sparse vector cannot be Qdrant's unnamed vector.",
                         fix="give the sparsevec column a name.")
    return renamed


def _check_payload_keys(payload_keys: dict[str, str], payload_by_column: dict) -> None:
    for column, key in payload_keys.items():
        if key not in ("", SPREAD) and any(not part for part in key.split(".")):
            raise InputError(f"--qdrant.payload-key {column}={key!r}: empty part in the dotted path.",
                             fix=f"write e.g. --qdrant.payload-key {column}=metadata.{column}.")
        if key == SPREAD and not payload_by_column[column].is_scalar(PayloadKind.JSON):
            raise InputError(f"--qdrant.payload-key {column}=*: only a json/jsonb column can be spread.",
                             fix=f"{column} is {payload_by_column[column].declared}; give it a key instead.")


def _tenant_index(tenant_column: str, payload_keys: dict[str, str], payload_by_column: dict) -> PayloadIndexSpec:
    """--qdrant.tenant-column: a keyword index marked is_tenant on the column's payload key."""
    if tenant_column not in payload_by_column:
        raise InputError(f"--qdrant.tenant-column {tenant_column!r} is not a migrated payload column.",
                         fix=f"payload columns are: {', '.join(payload_by_column) or 'none'}.")
    key = payload_keys.get(tenant_column, tenant_column)
    if not payload_by_column[tenant_column].is_scalar(PayloadKind.TEXT, PayloadKind.UUID):
        raise InputError(f"--qdrant.tenant-column {tenant_column} is {payload_by_column[tenant_column].declared}; "
                         "the tenant index is a keyword index.",
                         fix="choose a text or uuid column that names the tenant.")
    if key in ("", SPREAD):
        raise InputError(f"--qdrant.tenant-column {tenant_column}: the column must be a payload field.",
                         fix=f"drop --qdrant.payload-key {tenant_column}={key}.")
    return PayloadIndexSpec(key, TENANT_INDEX, "--qdrant.tenant-column")


def _indexes_by_key(indexes: list[PayloadIndexSpec], payload_keys: dict[str, str],
                    payload_by_column: dict) -> list[PayloadIndexSpec]:
    """Indexes mirrored from column names follow the columns' payload keys (none without a field)."""
    out = []
    for spec in indexes:
        if spec.source != "--qdrant.tenant-column" and spec.field in payload_by_column:
            key = payload_keys.get(spec.field, spec.field)
            if key in ("", SPREAD):
                continue
            spec = dataclasses.replace(spec, field=key)
        out.append(spec)
    return out


# --------------------------------------------------------------------------------------
# Payload shaping (applied by mapping.RowMapper to every batch, so migrate, verify and sync agree)
# --------------------------------------------------------------------------------------

def _llamaindex_text(payload: dict, row: dict) -> dict:
    """LlamaIndex keeps a node's text in the ``text`` column and an empty text inside
    ``_node_content``; its Qdrant store reads the text from ``_node_content``."""
    text = payload.pop("text", None)
    content = payload.get("_node_content")
    if isinstance(content, str):
        node = json.loads(content)
        node["text"] = text if text is not None else ""
        payload["_node_content"] = json.dumps(node, ensure_ascii=False)
    return payload


def _vecs_metadata(payload: dict, row: dict) -> dict:
    """vecs spreads a record's metadata beside its ``id``: a metadata key that a column's field took
    (``id``, the record's id) is kept unaltered under ``metadata.<key>``, its path in the row, not lost."""
    metadata = row.get("metadata") or {}
    lost = {k: v for k, v in metadata.items() if k != "metadata" and k in row and payload.get(k) is row[k]}
    if lost:
        if "metadata" in payload:
            raise DataError(f"A vecs record's metadata has keys named like its own fields ({', '.join(lost)}) and "
                            "a 'metadata' key, so their values have no free place in the payload.",
                            fix="give the record id another payload key, e.g. --qdrant.payload-key id=record_id.")
        payload["metadata"] = lost
    return payload


# A shaper gets the payload the keys made and the row's payload columns (by column name).
SHAPERS: dict[str, Callable[[dict, dict], dict]] = {"llamaindex": _llamaindex_text, "vecs": _vecs_metadata}


# complexity: the per-row payload shaping (renames, nesting, spreading, a layout's shaper) runs once per row: kept in
# one loop for speed.
def shape_payloads(plan, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the plan's payload keys (spread, then renames, then dotted paths) and shaper."""
    keys = dict(plan.payload_keys)
    spread = [c for c, k in keys.items() if k == SPREAD]
    nested = [(c, k.split(".")) for c, k in keys.items() if k not in ("", SPREAD) and "." in k]
    renames = [(c, k) for c, k in keys.items() if k not in ("", SPREAD) and "." not in k]
    dropped = [c for c, k in keys.items() if k == ""]
    shaper = SHAPERS[plan.payload_shape] if plan.payload_shape else None
    out = []
    for flat in payloads:
        payload: dict[str, Any] = {}
        for column in spread:
            value = flat.get(column)
            if value is not None and not isinstance(value, dict):
                raise DataError(f"--qdrant.payload-key {column}=*: a row's {column} is {type(value).__name__}, "
                                "not a JSON object, so its keys cannot be spread into the payload.",
                                fix=f"give {column} a key instead (--qdrant.payload-key {column}=NAME).")
            payload.update(value or {})
        moved = set(spread) | set(dropped) | {c for c, _ in nested} | {c for c, _ in renames}
        payload.update((c, v) for c, v in flat.items() if c not in moved)
        payload.update((k, flat.get(c)) for c, k in renames)
        for column, path in nested:
            node = payload
            for part in path[:-1]:
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, dict):
                    raise DataError(f"--qdrant.payload-key {column}={'.'.join(path)}: {part!r} holds a "
                                    f"{type(child).__name__}, not an object, in a row.",
                                    fix="choose a path whose parents are JSON objects (or absent).")
                node = child
            node[path[-1]] = flat.get(column)
        out.append(shaper(payload, flat) if shaper else payload)
    return out


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------


def rows_only(plan) -> bool:
    """CDC must read each changed row again (with the filter) instead of applying partial updates."""
    return bool(plan.where or plan.payload_keys or plan.payload_shape or plan.table.change_tables
                or any(v.name == "" for v in plan.vectors))
