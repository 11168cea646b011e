"""A Qdrant endpoint for tests: Qdrant's gRPC and REST APIs over Qdrant Edge, with fault injection.

This is a TEST INSTRUMENT, not a Qdrant server. No Qdrant server binary can be
installed on our machines, and none can be made to fail on command. So the tests
run pg2qdrant's server path, through the real qdrant-client, against this endpoint:

* the engine is Qdrant Edge (``qdrant-edge-py``): Qdrant's own storage, payload
  indexes, filters, exact and HNSW search; one shard per collection, in a temp folder
  (engine.py);
* two front-ends speak Qdrant's wire APIs: gRPC with qdrant-client's generated
  servicers (grpc_front.py) and the REST JSON routes qdrant-client calls (rest.py);
  both convert to qdrant-client's models, and convert.py alone turns those into Edge
  calls;
* strict mode (strict.py): a collection's ``strict_mode_config`` (given at create or update,
  or ``engine.default_strict_mode`` for collections created without one, as Qdrant Cloud
  does; get collection reports it) is enforced when enabled, with Qdrant's words: unindexed
  filtering refused for updates and retrieves, ``upsert_max_batchsize``, ``max_query_limit``,
  ``max_payload_index_count`` and ``write_rate_limit`` (429 with Retry-After);
* fault injection sits in front (faults.py): HTTP statuses and gRPC codes, Retry-After,
  dropped connections (a TCP proxy in front of gRPC cuts the call's connection),
  lost acknowledgements, slow answers, oversized requests, API keys, TLS.

Aliases are kept as a server keeps them: ``update_aliases`` (create, delete, rename, applied
as one change), listed all or per collection, and resolved by every operation that names a
collection (but delete, which takes a collection's own name); Qdrant's errors and statuses.

What a server adds and this does not: clustering, snapshots, WAL replay,
asynchronous writes (``wait=false`` writes are applied before the answer, which then
says "acknowledged"), background optimization (raising HNSW ``m`` builds the index
before the answer, for segments of any size unless ``index_every_segment=False``).

Use::

    from qdrant_endpoint import QdrantEndpoint, UPSERT, service_unavailable
    with QdrantEndpoint() as q:        # q.url: REST, q.grpc_url: grpc://127.0.0.1:PORT
        q.faults.add(UPSERT, collection="c", times=2, action=service_unavailable())
        ...                            # run pg2qdrant with --qdrant.url q.grpc_url
        q.points("c")                  # {id: models.Record}, read from the engine
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from qdrant_client import models

from . import rest
from .engine import ApiError as ApiError
from .engine import Collection, Engine
from .faults import *  # noqa: F403  (the fault vocabulary: operation names and actions, for the tests)
from .faults import DEFAULT_MAX_REQUEST_BYTES, UPSERT, FaultPlan, SeenRequest
from .proxy import Proxy

_MISSING_KEY = "Must provide an API key or an Authorization bearer token"
_WRONG_KEY = "Invalid API key or JWT"


class QdrantEndpoint:
    """Both front-ends over one engine, in background threads, on free loopback ports.

    api_key            require it (``api-key`` header/metadata or ``Authorization: Bearer``)
    max_request_bytes  refuse larger requests like Qdrant (REST 400 "JSON payload (N bytes) is
                       larger than allowed", gRPC OUT_OF_RANGE "decoded message length too large")
    too_large_status   REST status for that refusal (400 like Qdrant, 413 like a proxy)
    tls                (certificate PEM, key PEM): serve https and gRPC over TLS
    keep_bodies        keep each request (JSON body or protobuf message) in the log
    """

    def __init__(self, *, api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 too_large_status: int = 400, tls: tuple[bytes, bytes] | None = None, keep_bodies: bool = False,
                 version: str | None = None, index_every_segment: bool = True):
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.too_large_status = too_large_status
        self.tls = tls
        self.keep_bodies = keep_bodies
        self.version = version or _client_version()
        self.engine = Engine(index_every_segment=index_every_segment)
        self.faults = FaultPlan()
        self.requests: list[SeenRequest] = []
        self.host = "127.0.0.1"
        self.port = 0  # REST
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._rest: rest.Server | None = None
        self._rest_thread: threading.Thread | None = None
        self._grpc_server = None
        self._grpc_proxy: Proxy | None = None
        self._tls_dir: tempfile.TemporaryDirectory | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The REST address, as pg2qdrant's --qdrant.url takes it."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def grpc_port(self) -> int:
        return self._grpc_proxy.port if self._grpc_proxy else 0

    @property
    def grpc_url(self) -> str:
        """The gRPC address (grpc:// or grpcs://), as pg2qdrant's --qdrant.url takes it."""
        return f"{'grpcs' if self.tls else 'grpc'}://{self.host}:{self.grpc_port}"

    @property
    def grpc_direct_url(self) -> str:
        """The gRPC server itself, without the proxy in front (so no cut connections): for benchmarks."""
        return f"{'grpcs' if self.tls else 'grpc'}://{self.host}:{self._grpc_proxy.upstream[1]}"

    def target_url(self, front: str) -> str:
        return self.grpc_url if front == "grpc" else self.url

    def start(self) -> QdrantEndpoint:
        """Serve (again after stop(): same ports, same data)."""
        if self._rest is not None:
            return self
        self._stopping.clear()
        server = rest.Server((self.host, self.port), rest.Handler)
        server.endpoint = self
        if self.tls is not None:
            server.socket = self._ssl_context().wrap_socket(server.socket, server_side=True)
        self._rest = server
        self.port = server.server_address[1]
        self._rest_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                             name=f"qdrant-endpoint-rest-{self.port}", daemon=True)
        self._rest_thread.start()
        if self._grpc_server is None:
            import grpc

            from .grpc_front import start_server
            credentials = None if self.tls is None else grpc.ssl_server_credentials([(self.tls[1], self.tls[0])])
            self._grpc_server, upstream = start_server(self, credentials)
            self._grpc_proxy = Proxy(upstream)
        self._grpc_proxy.start()
        return self

    def stop(self) -> None:
        """Stop answering: connections are refused or cut, sleeps end; the data stays."""
        self._stopping.set()
        server, self._rest = self._rest, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._rest_thread is not None:
            self._rest_thread.join(timeout=5)
            self._rest_thread = None
        if self._grpc_proxy is not None:
            self._grpc_proxy.stop()

    def close(self) -> None:
        self.stop()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        self.engine.close()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()

    def __enter__(self) -> QdrantEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ssl_context(self) -> ssl.SSLContext:
        self._tls_dir = self._tls_dir or tempfile.TemporaryDirectory(prefix="qdrant-endpoint-tls-")
        cert, key = Path(self._tls_dir.name) / "cert.pem", Path(self._tls_dir.name) / "key.pem"
        cert.write_bytes(self.tls[0])
        key.write_bytes(self.tls[1])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx

    def client(self, *, grpc: bool = False, **kwargs: Any):
        """A QdrantClient for this endpoint (REST, or gRPC with grpc=True); kwargs pass through."""
        from qdrant_client import QdrantClient
        options: dict[str, Any] = dict(host=self.host, https=bool(self.tls), check_compatibility=False,
                                       api_key=self.api_key)
        if grpc:
            options.update(prefer_grpc=True, grpc_port=self.grpc_port, port=None)
        else:
            options.update(prefer_grpc=False, port=self.port)
        options.update(kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
            return QdrantClient(**options)

    # -- what tests look at ----------------------------------------------------------------
    def seen(self, op: str | None = None, collection: str | None = None, front: str | None = None) -> list[SeenRequest]:
        """Requests received (faulted and refused ones included), by operation, collection, front."""
        with self._log_lock:
            requests = list(self.requests)
        return [r for r in requests if (op is None or r.op == op) and (collection is None or r.collection == collection)
                and (front is None or r.front == front)]

    def upserts(self, collection: str | None = None) -> list[SeenRequest]:
        return self.seen(UPSERT, collection)

    def clear_log(self) -> None:
        with self._log_lock:
            self.requests.clear()

    def points(self, collection: str) -> dict[Any, models.Record]:
        """Every stored point of a collection (payload and vectors), by id."""
        return self.engine.points(collection)

    def collection(self, name: str) -> Collection:
        return self.engine.collection(name)

    def info(self, name: str) -> models.CollectionInfo:
        return self.engine.info(name)

    # -- used by the front-ends --------------------------------------------------------------
    def _log(self, req: SeenRequest) -> None:
        with self._log_lock:
            self.requests.append(req)

    def _key_problem(self, headers: dict[str, str]) -> str | None:
        given = headers.get("api-key")
        if given is None and headers.get("authorization", "").startswith("Bearer "):
            given = headers["authorization"][len("Bearer "):]
        if given == self.api_key:
            return None
        return _MISSING_KEY if given is None else _WRONG_KEY

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            (self._connections.add if add else self._connections.discard)(conn)


def _client_version() -> str:
    from importlib.metadata import version
    return version("qdrant-client")

