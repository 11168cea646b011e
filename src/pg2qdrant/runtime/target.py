"""TODO docstring (pg2qdrant/runtime/target.py, from pg2qdrant/pipeline.py)."""

from __future__ import annotations

import os

from pg2qdrant.core.errors import InputError
from pg2qdrant.core.options import CollectionOptions, StateConfig, TargetConfig
from pg2qdrant.core.plan import TENANT_INDEX, CollectionSpec, Plan, check_shape, vector_label
from pg2qdrant.core.retry import RetryPolicy
from pg2qdrant.destination import TargetSettings
from pg2qdrant.destination.address import TargetAddress, parse_target_url
from pg2qdrant.destination.checkpoints import STATE_NAMESPACE, FileRecords, StateStore
from pg2qdrant.ui import UI


def target_settings(options: TargetConfig, address: TargetAddress | None = None) -> TargetSettings:
    """How to reach the target (what a reader process needs to open its own connection)."""
    return TargetSettings(address or parse_target_url(options.qdrant_url), api_key=options.api_key,
                          skip_tls_verification=options.skip_tls_verification,
                          retry=RetryPolicy(max_retries=options.max_retries, deadline_s=options.retry_deadline_s))


def connect_target(options: TargetConfig, address: TargetAddress | None = None, ui: UI | None = None):
    settings = target_settings(options, address)
    address = settings.address
    if ui and options.api_key and address.kind == "server" and not address.https:
        ui.warn(f"the API key is sent unencrypted to {address.display()}; use https:// for remote servers.")
    return settings.open()


def ensure_collection(target, plan: Plan, collection_options: CollectionOptions, *, create: bool, ui: UI,
                      batch_size: int | None = None) -> bool:
    """Create the collection, or prove the existing one fits the plan (and meets its strict mode:
    strict_mode_indexes). True when created. ``batch_size``: said to be lowered where strict mode
    allows fewer points per request."""
    created = _ensure_collection(target, plan, collection_options, create=create, ui=ui)
    spec = plan.collection_spec(collection_options)
    if not created:
        strict_mode_indexes(target, spec, create=True, ui=ui)
    strict = _strict(target, spec.name)
    limit = strict.points_per_request() if strict else None
    if limit and batch_size and limit < batch_size:
        ui.info(f"Batch size lowered to {limit} by the collection's strict mode ({strict.limit_name()}).")
    return created


def strict_mode_indexes(target, spec: CollectionSpec, *, create: bool, ui: UI | None = None) -> None:
    """The payload indexes an existing collection in strict mode needs for this run, created first
    (``create``) or proven creatable; else a stop before any write.

    The run's own filtered requests are TRUNCATE's delete by an empty filter (no key, allowed by
    strict mode) and none else (deletes, verify's and the state collection's reads go by id); what a
    strict collection needs indexed is the tenant field (``--qdrant.tenant-column``), which every
    tenant's search filters by."""
    strict = _strict(target, spec.name)
    if strict is None:
        return
    have = dict(strict.indexed)
    missing = [(f, k) for f, k in spec.options.payload_indexes if k == TENANT_INDEX and f not in have]
    if not missing:
        return
    field, _ = missing[0]
    cap = strict.max_payload_index_count
    if cap is not None and len(have) + len(missing) > cap:
        raise InputError(
            f"Collection {spec.name!r} is in strict mode and has no keyword index on {field!r}, the tenant field "
            f"(--qdrant.tenant-column) that searches filter by; it cannot get one: it has {len(have)} payload "
            f"indexes, the most its max_payload_index_count ({cap}) allows. Nothing was written.",
            fix=f"delete an unused payload index of the collection (DELETE /collections/{spec.name}/index/NAME), "
                "raise its strict_mode_config.max_payload_index_count, or write to a new collection "
                "(--qdrant.collection).")
    if create:
        target.create_payload_indexes(spec.name, missing)
        if ui is not None:
            ui.info(f"Created the payload index the collection's strict mode needs: {field} (keyword, tenant).")


def _strict(target, collection: str):
    """The collection's strict mode (None: off, or a target without one)."""
    return getattr(target, "strict_mode", lambda name: None)(collection)


def _ensure_collection(target, plan: Plan, collection_options: CollectionOptions, *, create: bool, ui: UI) -> bool:
    spec = plan.collection_spec(collection_options)
    check = check_shape(spec, target.shape(spec.name))
    if not check.exists:
        if not create:
            raise InputError(
                f"Collection {plan.collection!r} does not exist and --migration.create-collection is false.",
                fix="create it first, or drop --migration.create-collection=false to let pg2qdrant create it.",
            )
        target.create_collection(spec)
        ui.info(f"Created collection {plan.collection!r}: {check.expected.describe()}; {_index_words(spec)}"
                + (f"; payload indexes: {', '.join(f'{f} ({t})' for f, t in collection_options.payload_indexes)}"
                   if collection_options.payload_indexes else ""))
        return True
    check.require_match(
        "already exists with a different vector configuration",
        fix="write to a new collection (--qdrant.collection), delete the existing one, or make the plan "
            "match it (--qdrant.distance-metric column=metric, --pg.columns).")
    ui.info(f"Collection {plan.collection!r} exists and matches the plan; points are upserted by ID.")
    return False


def _index_words(spec: CollectionSpec) -> str:
    """The collection's HNSW and quantization, and each vector's own where it differs (`inspect`
    says where each value came from)."""
    m, ef = spec.hnsw
    words = f"HNSW m={m} ef_construct={ef}" + (f", {spec.quantization} quantization" if spec.quantization else "")
    for v in spec.dense_vectors:
        own, quantization = spec.vector_hnsw(v), spec.vector_quantization(v)
        if own or quantization:
            words += (f" ({vector_label(v.name)}: " + ", ".join(
                ([f"m={own[0]} ef_construct={own[1]}"] if own else [])
                + ([f"{quantization} quantization"] if quantization else [])) + ")")
    return words


def state_store(options: StateConfig, target) -> StateStore:
    """Records in the target itself (tied to it by where they live), or in --migration.state-file
    (whose state ids then include target_identity: the file may be reused against another target)."""
    if options.state_file:
        return StateStore(FileRecords(options.state_file))
    return StateStore(target.records(options.offsets_collection, STATE_NAMESPACE))


def source_identity(plan: Plan) -> dict:
    """Which table this is, independently of how it is reached (no host, user or password)."""
    return {"system_identifier": plan.server.system_identifier, "database": plan.server.database,
            "table": plan.table.display}


def target_identity(address: TargetAddress) -> dict:
    """Which Qdrant this is, without credentials: a server's host, port and path prefix (scheme
    and API key say how it is reached, not which one it is), or the resolved folder."""
    if address.kind == "server":
        return {"kind": "server", "host": address.host.lower(), "port": address.port, "prefix": address.prefix or ""}
    if address.kind == "memory":
        return {"kind": "memory"}
    return {"kind": address.kind, "path": os.path.realpath(address.path)}


def records_owner(qdrant_url: str, state_file: str | None) -> dict | None:
    """The target a saved record must name to be this target's: in a state file (which may serve several
    targets) its :func:`target_identity`; None for records kept in the target itself (its own by where
    they live)."""
    return target_identity(parse_target_url(qdrant_url)) if state_file else None


def describe_target(identity: dict) -> str:
    if not identity:  # a record written before records named their target
        return ""
    if identity.get("kind") == "server":
        return f"{identity['host']}:{identity['port']}" + (f"/{identity['prefix']}" if identity["prefix"] else "")
    return f"{identity.get('kind')}:{identity.get('path', '')}".rstrip(":")
