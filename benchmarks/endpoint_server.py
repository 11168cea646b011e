"""The Edge-backed test endpoint (tests/qdrant_endpoint: Qdrant's gRPC API over Qdrant Edge
shards) as a process of its own, for bench_migrate.py's `server-edge` measurement.

It is a TEST INSTRUMENT, not Qdrant: its front-end converts each request to qdrant-client's
models, then to Edge calls, in Python. Run as its own process, so its CPU and memory are not
counted with the migration's. Clients reach the gRPC server directly, not through the
endpoint's fault-injection proxy (a Python byte relay a real server does not have).
Shards live under $TMPDIR (bench_migrate points it at its scratch folder).

``--rtt-ms N`` holds every request N ms before serving it (the endpoint's Delay fault), as a
network round trip to a remote server would (bench_sync's `server` target: 20 ms, a cloud cluster).

    python benchmarks/endpoint_server.py      # prints its grpc:// URL, serves until SIGTERM
    python benchmarks/endpoint_server.py --rtt-ms 20
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from qdrant_endpoint import UPSERT, Delay, QdrantEndpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip added to every request")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with QdrantEndpoint() as endpoint:
        if args.rtt_ms > 0:  # every request, any operation, for ever
            endpoint.faults.add(None, action=Delay(args.rtt_ms / 1000), times=None)
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
