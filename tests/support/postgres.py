"""A throwaway PostgreSQL server for tests, on loopback, with a password login (as a company's MLflow database).

It needs PostgreSQL's server programs (``initdb``, ``postgres``: Debian's ``postgresql`` package); :func:`missing`
says when they are absent, so a test can skip. PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` user, in a directory of its own outside pytest's
private temporary directories. Durability is off (``fsync``): the data dies with the test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from simulators.threaded import free_port
from tests.support.mlflow_server import stop_process_group

START_TIMEOUT_S = 180.0  # about 3 s on an idle machine (initdb included)
USER, DATABASE = "mlflow", "postgres"


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    def uri(self, *, with_login: bool = True) -> str:
        """``postgresql://[user:password@]host:port/database``."""
        login = f"{self.user}:{self.password}@" if with_login else ""
        return f"postgresql://{login}{self.host}:{self.port}/{self.database}"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def missing() -> str | None:
    """Why no PostgreSQL server can be started here (None when one can)."""
    for name in ("initdb", "postgres"):
        if _binary(name) is None:
            return f"PostgreSQL's {name} is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
    return None


@contextmanager
def running_postgres(password: str) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster with the login ``mlflow``/``password`` (scram-sha-256), stopped after."""
    initdb, postgres = _binary("initdb"), _binary("postgres")
    assert initdb and postgres, missing()
    as_root = os.geteuid() == 0
    account = pwd.getpwnam("postgres") if as_root else None
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    try:
        (root / "pwfile").write_text(password + "\n")
        if account is not None:
            for path in (root, root / "pwfile"):
                os.chown(path, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid} if account is not None else {}
        subprocess.run(
            [
                *(initdb, "-D", str(root / "data"), "-U", USER, f"--pwfile={root / 'pwfile'}"),
                *("--auth=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8"),
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
            cwd=root,
            **user,
        )
        port = free_port()
        log = root / "server.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    *(postgres, "-D", str(root / "data"), "-h", "127.0.0.1", "-p", str(port), "-k", ""),
                    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                ],
                cwd=root,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **user,
            )
        server = PostgresServer("127.0.0.1", port, USER, password, DATABASE)
        try:
            _wait_until_ready(server, process, log)
            yield server
        finally:
            stop_process_group(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, f"postgres exited:\n{log.read_text()[-3000:]}"
        try:
            psycopg2.connect(server.uri(), connect_timeout=5).close()
            return
        except psycopg2.OperationalError:
            assert time.monotonic() < deadline, f"postgres not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
