"""Where a target is: ``--qdrant.url`` parsed into a :class:`TargetAddress`, before anything connects.

``--qdrant.url`` forms:
  http(s)://host:port  a Qdrant server; gRPC when the port is 6334, REST otherwise, TLS for https
  grpc(s)://host:port  a Qdrant server over gRPC on any port (default 6334), TLS for grpcs
  local:DIR            qdrant-client's embedded local mode, stored in DIR
  :memory:             local mode in memory (gone when the process ends: for tests and demos)
  edge:DIR             a Qdrant Edge shard (see destination/edge.py)
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from pg2qdrant.core import redaction
from pg2qdrant.core.errors import InputError

GRPC_PORT = 6334
REST_PORT = 6333


@dataclass(frozen=True)
class TargetAddress:
    kind: str  # server | local | memory | edge
    url: str = ""  # server: URL as given (displayed redacted)
    path: str = ""  # local / edge: folder
    host: str = ""
    port: int = 0
    https: bool = False
    grpc: bool = False
    prefix: str | None = None

    def display(self) -> str:
        if self.kind == "server":
            return f"{redaction.safe_url(self.url)} ({'gRPC' if self.grpc else 'REST'})"
        if self.kind == "memory":
            return ":memory: (local mode, in memory)"
        return f"{self.kind}:{self.path}"


def parse_target_url(url: str | None) -> TargetAddress:
    """Understand --qdrant.url; InputError with the accepted forms when it is not one."""
    forms = "http(s)://host:port, grpc(s)://host:port, local:DIR, :memory: or edge:DIR"
    if not url or not url.strip():
        raise InputError("--qdrant.url is empty.", fix=f"use one of {forms}.")
    url = url.strip()
    redaction.register_url(url)
    if url == ":memory:":
        return TargetAddress("memory")
    for kind in ("local", "edge"):
        if url.startswith(kind + ":"):
            path = url[len(kind) + 1:]
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise InputError(f"--qdrant.url {url!r} names no folder.", fix=f"write {kind}:/path/to/folder.")
            return TargetAddress(kind, path=path)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"--qdrant.url {redaction.redact(url)!r} is not a valid URL: {exc}.",
                         fix=f"use one of {forms}.") from None
    if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
        raise InputError(
            f"--qdrant.url {redaction.redact(url)!r} is not a Qdrant address.",
            fix=f"use one of {forms} (for example http://localhost:6334 for gRPC or "
                "https://xyz.cloud.qdrant.io:6333 for REST).",
        )
    https = parts.scheme in ("https", "grpcs")
    # grpc(s):// says gRPC whatever the port (a proxy, a test endpoint); http(s):// keeps the
    # reference tool's rule: gRPC on 6334 only.
    explicit_grpc = parts.scheme in ("grpc", "grpcs")
    if port is None:
        # qdrant-client's convention; the reference went to 80/443 (a trap)
        port = GRPC_PORT if explicit_grpc else REST_PORT
    prefix = parts.path.strip("/") or None
    return TargetAddress("server", url=url, host=parts.hostname, port=port, https=https,
                         grpc=explicit_grpc or port == GRPC_PORT, prefix=prefix)
