"""A real BigQuery REST API for tests: bqemulator, run as a subprocess from its own venv.

Use as a pytest plugin (`pytest_plugins = ["taxi_assets_tests.emulators.bigquery"]`) for the
session-scoped `bigquery_emulator` fixture, or `run_bigquery_emulator()` as a context manager.

The emulator lives in its own virtualenv (scripts/install_bqemulator.sh, run here when needed):
its google-cloud-bigquery-storage dependency would make to_dataframe() in the project venv call
Google's real Storage API. It starts once per session (about 3 s) in ephemeral, in-memory mode;
tests keep apart by using their own table names.

Its load jobs read `gs://bucket/object` from the session's fake-gcs-server (`gcs_emulator`)
through the GCS JSON API, as BigQuery reads Cloud Storage (bq_launcher.py; the emulator named
by STORAGE_EMULATOR_HOST), so a lake the pipeline writes there is what the jobs read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from taxi_assets_tests.emulators.gcs import GcsEmulator

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_bqemulator.sh"
LAUNCHER = Path(__file__).resolve().with_name("bq_launcher.py")
DEFAULT_PROJECT = "test-project"
# A guard against a hung start, not a performance expectation: a fresh venv compiles its
# bytecode on first start.
STARTUP_LIMIT_SECONDS = 180


@dataclass(frozen=True)
class BigQueryEmulator:
    endpoint: str  # e.g. http://127.0.0.1:40123, for client_options / the IO manager's api_endpoint
    project: str
    log_path: Path

    def client(self):
        """A google-cloud-bigquery client for this emulator (anonymous credentials)."""
        from taxi_assets.storage.bigquery_tables import bigquery_client

        return bigquery_client(project=self.project, api_endpoint=self.endpoint)


def emulator_venv() -> Path:
    """Where install_bqemulator.sh puts the venv; keep in step with the script."""
    if os.environ.get("BQEMULATOR_VENV"):
        return Path(os.environ["BQEMULATOR_VENV"])
    home = os.environ.get("TAXI_HOME") or str(REPO_ROOT / ".local")
    return Path(home) / "bqemulator-venv"


def ensure_installed() -> Path:
    """Run the (idempotent, fast when up to date) install script; return the venv's python."""
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        check=False,  # reported below with the script's output
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    python = emulator_venv() / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{INSTALL_SCRIPT} succeeded but {python} is missing")
    return python


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def run_bigquery_emulator(
    project: str = DEFAULT_PROJECT, log_dir: Path | None = None, gcs: GcsEmulator | None = None
) -> Iterator[BigQueryEmulator]:
    """Start the emulator on a free 127.0.0.1 port; stop it on exit. Its load jobs read
    `gs://` objects from `gcs`."""
    python = ensure_installed()
    work_dir = Path(tempfile.mkdtemp(prefix="bqemulator-"))
    log_path = (log_dir or work_dir) / "bqemulator.log"
    ready_file = work_dir / "port"
    env = {
        k: v
        for k, v in os.environ.items()
        # The emulator venv must not see the project venv's packages.
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["BQEMU_ENABLE_FORMAT_EXTENSIONS"] = "false"
    env["BQEMU_UPLOAD_STAGING_DIR"] = str(work_dir / "uploads")
    if gcs is not None:
        env["STORAGE_EMULATOR_HOST"] = gcs.url

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(python),
                str(LAUNCHER),
                "--host",
                "127.0.0.1",
                "--port",
                "0",  # the OS picks a free port; the launcher reports it in ready_file
                "--project",
                project,
                "--ready-file",
                str(ready_file),
                "--parent-pid",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work_dir,
        )
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while not ready_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"bqemulator exited with {proc.returncode} during start-up; log {log_path}:\n"
                    + _tail(log_path)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"bqemulator did not start within {STARTUP_LIMIT_SECONDS}s; log {log_path}:\n"
                    + _tail(log_path)
                )
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{int(ready_file.read_text())}"
        if not _ready(endpoint):
            raise RuntimeError(
                f"bqemulator at {endpoint} is not ready; log {log_path}:\n" + _tail(log_path)
            )
        yield BigQueryEmulator(endpoint=endpoint, project=project, log_path=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for scratch in ("uploads", "gs-objects"):
            shutil.rmtree(work_dir / scratch, ignore_errors=True)
        if log_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bigquery_emulator(
    tmp_path_factory: pytest.TempPathFactory, gcs_emulator: GcsEmulator
) -> Iterator[BigQueryEmulator]:
    """A running BigQuery emulator for the whole test session, loading from `gcs_emulator`."""
    with run_bigquery_emulator(
        log_dir=tmp_path_factory.mktemp("bqemulator"), gcs=gcs_emulator
    ) as emulator:
        yield emulator
