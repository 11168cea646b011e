"""A worker process's tie to its coordinator: it ends as soon as the coordinator is gone.

A coordinator killed with SIGKILL (or by the OOM killer) runs no cleanup, and its
reader processes would live on as orphans, holding PostgreSQL connections and
waiting forever (for instance to flush a queue nobody reads). So a worker:

- asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``);
- exits at once if the parent died before it could ask (it was already adopted);
- watches the parent's end of the spawn pipe from a thread (portable) and exits
  when it closes.

Exiting closes every socket, so PostgreSQL ends the worker's backends and Qdrant
its connections. This module imports only the standard library, and
:func:`run` ties the process *before* the worker's arguments are unpickled (which
imports numpy, psycopg, qdrant-client: seconds on a busy machine, during which a
dead coordinator would otherwise go unnoticed).
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Tie this (spawned) process to its parent; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: no tracebacks from workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):  # the pipe watcher below still ends us
            pass
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if os.getppid() != parent.pid:  # already gone: PDEATHSIG would never fire
        os._exit(1)
    threading.Thread(target=_exit_when_closed, args=(parent.sentinel,), name="pg2qdrant-lifeline",
                     daemon=True).start()


def _exit_when_closed(sentinel) -> None:
    multiprocessing.connection.wait([sentinel])  # readable only at EOF: the parent is gone
    os._exit(1)


def alive() -> bool:
    """Whether the parent still runs (always true in the main process)."""
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def run(function: str, pickled_args: bytes, *args) -> None:
    """Process target: tie to the parent, then call ``module:name`` with the unpickled arguments
    followed by ``args`` (multiprocessing objects, which must travel the ordinary way)."""
    die_with_parent()
    module, name = function.split(":")
    getattr(importlib.import_module(module), name)(*pickle.loads(pickled_args), *args)
