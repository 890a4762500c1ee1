"""A real, throwaway PostgreSQL server for integration tests.

Use it from a test module with ``pytest_plugins = ["conftest_pg"]`` and the fixtures
``pg_server`` (session: base URL of a server started with initdb + pg_ctl, stopped at teardown)
and ``pg_url`` (a fresh, empty database per test). Tests skip when ``initdb``/``pg_ctl`` are not
on PATH or in Debian's /usr/lib/postgresql/<version>/bin, except under CI=true, where they fail: CI
provides the server (.ci/run installs it when missing), so a missing one is a broken CI. PostgreSQL refuses to run as root, so under root the server runs as the ``postgres``
user (or ``nobody``) through ``runuser``, in a temporary directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _run(cmd: list[str], cwd: Path, log: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        server_log = log.read_text(errors="replace") if log and log.exists() else ""
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{server_log}")


def _server_binaries() -> tuple[str | None, str | None]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return initdb, pg_ctl
    # Debian keeps the server binaries off PATH, one folder per major version; take the newest.
    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True):
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return str(bin_dir / "initdb"), str(bin_dir / "pg_ctl")
    return None, None


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the PostgreSQL tests must run, not skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    initdb, pg_ctl = _server_binaries()
    if not initdb or not pg_ctl:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) are not on PATH nor in /usr/lib/postgresql/*/bin")
    prefix: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="copyhunt-pg-"))  # short path: the socket name must fit 107 bytes
    if os.geteuid() == 0:
        user, runuser = _unprivileged_user(), shutil.which("runuser")
        if user is None or runuser is None:
            shutil.rmtree(tmp, ignore_errors=True)
            _missing("running as root without runuser or an unprivileged user for PostgreSQL")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", user.pw_name, "--"]
    data, log, port = tmp / "data", tmp / "server.log", _free_port()
    try:
        _run(prefix + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"], tmp)
        # fsync off: a test server's data is disposable, and it makes schema creation much faster.
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run(prefix + [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"], tmp, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], cwd=tmp,
                       capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A new empty database on the session's server, dropped after the test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = pg_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{pg_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
