"""Qdrant targets: a server or local mode through qdrant-client (qdrant.py), or a Qdrant Edge shard (edge.py).

Both implement the Target protocol of base.py and declare their Capabilities there
(which callers read instead of checking the kind of target). A reader process writing to a
server over gRPC uses grpc_writer.py instead, and never imports qdrant-client (see there):
so this package imports qdrant.py only when a qdrant-client target is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pg2qdrant.core.retry import RetryPolicy
from pg2qdrant.destination.address import TargetAddress, parse_target_url
from pg2qdrant.destination.base import Capabilities, Target
from pg2qdrant.destination.server import capabilities_for


@dataclass(frozen=True)
class TargetSettings:
    """How to open a target, picklable: a reader process opens its own connection from these
    (a client holds sockets and threads and cannot travel between processes)."""

    address: TargetAddress
    api_key: str | None = field(default=None, repr=False)  # never in a repr, a log line or a traceback
    skip_tls_verification: bool = False
    retry: RetryPolicy | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What the target at this address can do, known before it is opened."""
        if self.address.kind == "edge":
            from pg2qdrant.destination.edge import EdgeTarget
            return EdgeTarget.capabilities
        return capabilities_for(self.address)

    @property
    def in_process(self) -> bool:
        """Edge and local mode run inside this process and lock their folder: one writer only."""
        return self.capabilities.in_process

    def open(self, *, check: bool = True) -> Target:
        """A connected target (InputError/TargetError when it cannot be used); ``check`` asks the
        server once before anything is written."""
        if self.address.kind == "edge":
            from pg2qdrant.destination.edge import EdgeTarget
            target = EdgeTarget(self.address)
        else:
            from pg2qdrant.destination.qdrant import QdrantTarget
            target = QdrantTarget(self.address, api_key=self.api_key,
                                  skip_tls_verification=self.skip_tls_verification, retry=self.retry)
        if check:
            try:
                target.check_reachable()
            except BaseException:
                target.close()
                raise
        return target

    def open_writer(self) -> Any:
        """A reader's connection for writing points (the coordinator checked the target): over gRPC
        the lean writer of grpc_writer.py, else the target itself."""
        if self.address.kind == "server" and self.address.grpc:
            from pg2qdrant.destination.grpc_writer import GrpcPointsWriter
            return GrpcPointsWriter(self.address, api_key=self.api_key, retry=self.retry)
        return self.open(check=False)


def open_target(address: TargetAddress, *, api_key: str | None = None, skip_tls_verification: bool = False,
                retry=None) -> Target:
    """A connected target for ``address`` (InputError/TargetError when it cannot be used)."""
    return TargetSettings(address, api_key, skip_tls_verification, retry).open()


def __getattr__(name: str) -> Any:
    if name == "QdrantTarget":  # imported on first use: it brings qdrant-client
        from pg2qdrant.destination.qdrant import QdrantTarget
        return QdrantTarget
    raise AttributeError(name)


__all__ = ["open_target", "parse_target_url", "Capabilities", "QdrantTarget", "Target", "TargetAddress",
           "TargetSettings"]
