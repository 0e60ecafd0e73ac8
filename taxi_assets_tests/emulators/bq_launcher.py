"""Start bqemulator with the few fixes it needs here; runs inside the emulator's own venv.

Usage: python bq_launcher.py --host 127.0.0.1 --port 0 --project test-project --ready-file PATH

Why a launcher instead of the `bqemulator start` CLI:
- google-cloud-bigquery sends the media part of multipart uploads (every load under 5 MiB) as
  `*/*`, which the emulator's upload whitelist rejects; we extend the whitelist in-process rather
  than edit site-packages.
- the emulator runs `INSTALL spatial` at start-up, which downloads from the DuckDB extension
  repository unless the extension is already installed. We install it from the pinned
  duckdb-extension-spatial wheel into a directory inside the venv (not ~/.duckdb).
- its load jobs read `gs://bucket/object` only from a local folder (BQEMU_GCS_LOCAL_ROOT).
  With STORAGE_EMULATOR_HOST set (the GCS emulator's URL, as Google's clients take it) they
  download each object through the GCS JSON API instead, one at a time, and load it: a lake
  written to fake-gcs-server is what they read, and a missing object fails the job with
  "Not found: URI gs://…". No wildcards (BigQuery's `*` matches any name with the prefix).
- with --port 0 the OS picks a free port with no bind race; the real port is written to
  --ready-file once both servers accept traffic, which doubles as the readiness signal.

This file must only import the standard library at module level: it is not run by the project venv.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

# The avro extension would be downloaded at start-up; nothing here loads Avro.
os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")


def _allow_generic_upload_content_type() -> None:
    from bqemulator.api.routes import upload

    # _is_permitted_media_type reads this module global on every call.
    upload._PERMITTED_MEDIA_CONTENT_TYPES = (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")


def _read_gs_uris_from_the_storage_emulator(storage: str) -> None:
    import shutil
    import urllib.error
    import urllib.parse
    import urllib.request
    import uuid

    from bqemulator.jobs import executor

    resolve, load = executor._resolve_uri, executor._load_path_into_target
    # In the emulator's working folder, which its runner removes.
    downloads = Path.cwd() / "gs-objects"
    downloads.mkdir(exist_ok=True)

    def resolve_uri(uri: str, ctx) -> str:
        # Kept as it is (it passes the path check), for load_path to fetch when its turn comes.
        return uri if uri.startswith("gs://") else resolve(uri, ctx)

    def load_path(path: str, job, ctx) -> None:
        if not path.startswith("gs://"):
            return load(path, job, ctx)
        bucket, _, name = path.removeprefix("gs://").partition("/")
        url = (
            f"{storage.rstrip('/')}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}"
            f"/o/{urllib.parse.quote(name, safe='')}?alt=media"
        )
        local = downloads / uuid.uuid4().hex
        try:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(local, "wb") as out:
                    shutil.copyfileobj(response, out)
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    raise executor.InvalidQueryError(f"Not found: URI {path}") from None
                raise
            load(str(local), job, ctx)
        finally:
            local.unlink(missing_ok=True)

    # execute_load_job looks both up in the module on every load.
    executor._resolve_uri, executor._load_path_into_target = resolve_uri, load_path


def _use_bundled_duckdb_extensions() -> None:
    import duckdb
    from duckdb_extensions import import_extension

    extension_dir = Path(sys.prefix) / "duckdb-extensions"
    extension_dir.mkdir(exist_ok=True)
    original_connect = duckdb.connect

    def connect(database: str = ":memory:", read_only: bool = False, config=None, **kwargs):
        config = {"extension_directory": str(extension_dir), **(config or {})}
        return original_connect(database, read_only=read_only, config=config, **kwargs)

    duckdb.connect = connect
    with duckdb.connect() as con:
        import_extension("spatial", con=con)


async def _serve(args: argparse.Namespace) -> None:
    from bqemulator.config import LogFormat, PersistenceMode, Settings
    from bqemulator.server import EmulatorServer

    settings = Settings(
        rest_host=args.host,
        rest_port=args.port,
        grpc_host=args.host,
        grpc_port=0,
        default_project_id=args.project,
        persistence_mode=PersistenceMode.EPHEMERAL,
        log_format=LogFormat.JSON,  # its console renderer forces ANSI colours into the log file
        metrics_enabled=False,
    )
    server = EmulatorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    await server.start()
    background = []  # asyncio keeps only weak references to tasks
    if args.parent_pid:
        # The test session may die without stopping us (SIGKILL, a crashed CI step); don't
        # outlive it.
        async def watch_parent() -> None:
            while os.getppid() == args.parent_pid:
                await asyncio.sleep(1)
            stop.set()

        background.append(asyncio.create_task(watch_parent()))
    try:
        if args.ready_file:
            ready = Path(args.ready_file)
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(str(server.rest_port))
            tmp.replace(ready)  # atomic: readers never see a half-written port
        print(f"bq_launcher: serving on {server.rest_url}", flush=True)
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="REST port; 0 lets the OS pick")
    parser.add_argument("--project", default="test-project")
    parser.add_argument("--ready-file", help="written with the REST port once serving")
    parser.add_argument("--parent-pid", type=int, help="exit when this parent process is gone")
    args = parser.parse_args(argv)

    _allow_generic_upload_content_type()
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        _read_gs_uris_from_the_storage_emulator(os.environ["STORAGE_EMULATOR_HOST"])
    _use_bundled_duckdb_extensions()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
