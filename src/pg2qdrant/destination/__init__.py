"""Qdrant targets: a server or local mode through qdrant-client (qdrant.py), or a Qdrant Edge shard (edge.py).

Both expose the same small interface: check_reachable, shape, create_collection,
finish_load, upsert, count, retrieve, scroll, delete_points, close, plus the
max_in_flight / max_request_bytes hints the writer uses.
"""

from __future__ import annotations

from pg2qdrant.destination.qdrant import QdrantTarget, TargetAddress, parse_target_url


def open_target(address: TargetAddress, *, api_key: str | None = None, skip_tls_verification: bool = False,
                retry=None):
    """A connected target for ``address`` (InputError/TargetError when it cannot be used)."""
    if address.kind == "edge":
        from pg2qdrant.destination.edge import EdgeTarget
        target = EdgeTarget(address)
    else:
        target = QdrantTarget(address, api_key=api_key, skip_tls_verification=skip_tls_verification, retry=retry)
    try:
        target.check_reachable()
    except BaseException:
        target.close()
        raise
    return target


__all__ = ["open_target", "parse_target_url", "QdrantTarget", "TargetAddress"]
