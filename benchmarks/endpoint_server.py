"""The Edge-backed test endpoint (tests/qdrant_endpoint: Qdrant's gRPC API over Qdrant Edge
shards) as a process of its own, for bench_migrate.py's `server-edge` measurement.

It is a TEST INSTRUMENT, not Qdrant: its front-end converts each request to qdrant-client's
models, then to Edge calls, in Python. Run as its own process, so its CPU and memory are not
counted with the migration's. Clients reach the gRPC server directly, not through the
endpoint's fault-injection proxy (a Python byte relay a real server does not have).
Shards live under $TMPDIR (bench_migrate points it at its scratch folder).

    python benchmarks/endpoint_server.py      # prints its grpc:// URL, serves until SIGTERM
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from qdrant_endpoint import UPSERT, QdrantEndpoint


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with QdrantEndpoint() as endpoint:
        print(endpoint.grpc_direct_url, flush=True)
        stop.wait()
        upserts = endpoint.seen(UPSERT)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _measure import own_peak_rss_bytes
    print(f"{len(upserts)} upsert requests; endpoint peak RSS {own_peak_rss_bytes() / 2**20:,.0f} MiB",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
