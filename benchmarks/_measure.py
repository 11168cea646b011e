"""Run one measurement in a fresh subprocess and sample the memory of its whole process tree.

Every measurement of bench_migrate.py runs in its own Python process, so that
peaks of one measurement never mix with another's (Python rarely gives memory
back to the system). The parent samples, every ``interval`` seconds, the sum
over the child and all its descendants (reader processes, which also encode and
send to a Qdrant server themselves; multiprocessing's resource tracker) of

- ``rss``: resident set size, what `ps` and `top` show. Summed over processes it
  counts shared pages (libraries, a mapped file) once per process, so it errs
  high;
- ``anon``: rss minus file-backed/shared resident pages (psutil's ``shared``),
  roughly the private heap: what grows if a queue or a buffer grows.

Sampling can miss a spike shorter than the interval; the child also reports
its own exact peak (VmHWM), which bounds the main process's peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class TreeMemory:
    peak_rss: int = 0  # bytes, sum over the process tree, max over samples
    peak_anon: int = 0
    peak_main_rss: int = 0  # the child process alone (sampled)
    peak_processes: int = 0
    samples: int = 0


class TreeSampler(threading.Thread):
    """Samples the RSS of ``pid`` and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True, name=f"rss-sampler-{pid}")
        self.root = psutil.Process(pid)
        self.interval = interval
        self.memory = TreeMemory()
        self._halt = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = anon = main = 0
        counted = 0
        for p in procs:
            try:
                m = p.memory_info()
            except psutil.Error:  # exited between listing and reading
                continue
            counted += 1
            rss += m.rss
            anon += max(m.rss - m.shared, 0)
            if p.pid == self.root.pid:
                main = m.rss
        if not counted:
            return
        mem = self.memory
        mem.samples += 1
        mem.peak_rss = max(mem.peak_rss, rss)
        mem.peak_anon = max(mem.peak_anon, anon)
        mem.peak_main_rss = max(mem.peak_main_rss, main)
        mem.peak_processes = max(mem.peak_processes, counted)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> TreeMemory:
        self._halt.set()
        self.join()
        return self.memory


class MeasurementFailed(RuntimeError):
    pass


@dataclass
class Measured:
    result: dict  # what the child wrote
    memory: TreeMemory
    wall_seconds: float  # subprocess start to exit (includes interpreter start and imports)
    log: str = ""
    extra: dict = field(default_factory=dict)


def run_child(script: Path, spec: dict, *, workdir: Path, timeout: float, interval: float = 0.1,
              env: dict | None = None) -> Measured:
    """Run ``python script --child SPEC`` and return the child's JSON result with the tree's memory.

    The child reads its spec from a file and writes its result to ``spec["out"]``;
    its stdout and stderr go to a log file (shown when it fails).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{spec['name']}-{os.getpid()}-{time.monotonic_ns()}"
    spec_path = workdir / f"{tag}.spec.json"
    out_path = workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    spec = {**spec, "out": str(out_path)}
    spec_path.write_text(json.dumps(spec))
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), "--child", str(spec_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            proc.wait()
            raise MeasurementFailed(f"{spec['name']} timed out after {timeout:.0f} s; log: {log_path}") from None
        finally:
            memory = sampler.stop()
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0 or not out_path.exists():
        raise MeasurementFailed(f"{spec['name']} failed (exit {proc.returncode}); last lines of {log_path}:\n"
                                + "\n".join(text.splitlines()[-25:]))
    result = json.loads(out_path.read_text())
    for p in (spec_path, out_path):
        p.unlink(missing_ok=True)
    log_path.unlink(missing_ok=True)
    return Measured(result, memory, wall, text)


def _kill_tree(pid: int) -> None:
    """Terminate the child we started and its descendants (only that tree)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def own_peak_rss_bytes() -> int | None:
    """This process's exact peak RSS since it started (VmHWM), in bytes.

    Not getrusage's ru_maxrss: Linux carries that over from the parent across
    fork + exec, so a child started by a big parent reports the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info() -> dict:
    info: dict = {
        "cpu_count_logical": psutil.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["kernel"] = os.uname().release
    except AttributeError:
        pass
    return info
