"""A TCP proxy in front of the gRPC server, as psycopg's tests put one in front of PostgreSQL.

Each client connection gets its own upstream connection; the server sees the
upstream socket's port as the call's peer, so a fault can cut exactly the client
connection a call arrived on (``cut(peer)``), with a FIN or an RST. ``stop()`` closes
the listener and every connection (clients see the server go away); ``start()``
listens again on the same port. Bytes pass through untouched (TLS included).
"""

from __future__ import annotations

import socket
import struct
import threading


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1", port: int = 0):
        self.upstream = (host, upstream_port)
        self.host, self.port = host, port
        self._listener: socket.socket | None = None
        self._pairs: dict[int, tuple[socket.socket, socket.socket]] = {}  # upstream local port -> pair
        self._lock = threading.Lock()

    def start(self) -> Proxy:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"qdrant-endpoint-proxy-{self.port}",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            pairs = list(self._pairs.values())
            self._pairs.clear()
        for pair in pairs:
            _close(*pair)

    def cut(self, peer: str, *, reset: bool) -> bool:
        """Close the client connection whose upstream side is ``peer`` ("ipv4:127.0.0.1:PORT")."""
        try:
            port = int(peer.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            return False
        with self._lock:
            pair = self._pairs.pop(port, None)
        if pair is None:
            return False
        client, upstream = pair
        if reset:
            # SHUT_RD wakes this side's pump without sending anything; SO_LINGER 0 + close
            # then makes the kernel send RST instead of FIN.
            try:
                client.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            _close(upstream)
        else:
            _close(client, upstream)
        return True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = upstream.getsockname()[1]
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    _close(client, upstream)
                    return
                self._pairs[port] = (client, upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, port), daemon=True,
                                 name=f"qdrant-endpoint-proxy-pump-{port}").start()

    def _pump(self, src: socket.socket, dst: socket.socket, port: int) -> None:
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            pair = self._pairs.pop(port, None)
        if pair is not None:
            _close(*pair)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
