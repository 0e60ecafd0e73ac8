"""Fetching a monthly TLC file: streamed, retried, verified, versioned, never half-taken, and
one download of a file at a time."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import http.client
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taxi_assets import human
from taxi_assets.storage.atomic_files import check_free_space
from taxi_assets.tlc.source import (
    DownloadFailed,
    SourceNotPublished,
    local_file,
    not_published_or_refused,
    remote_file,
    source_url,
    what_is_read,
)

CHUNK_BYTES = 1 << 20
# Below malloc's mmap threshold (taxi_assets/__init__.py), so that checking a file does not map
# and unmap a fresh buffer for every piece: 1.3-1.6 s of CPU for a 7.7 M-row month, 0.6 s so.
VERIFY_PIECE_BYTES = 64 << 10


@dataclass(frozen=True)
class LandedFile:
    """A complete copy of the source's file, and the version it is."""

    path: Path
    version: str


def _transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return isinstance(
        error,
        (
            urllib.error.URLError,
            ConnectionError,
            TimeoutError,
            http.client.HTTPException,
            DownloadFailed,
        ),
    )


def _stream(url: str, part: Path, timeout: float, log: Callable[[str], None]) -> int:
    """Copy url to part; the byte count must match the server's Content-Length."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        expected = response.headers.get("Content-Length")
        expected = int(expected) if expected is not None else None
        check_free_space(part.parent, expected or 0, setting="TAXI_HOME")
        received, next_report = 0, 0.0
        try:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                if expected and received / expected >= next_report:
                    log(
                        f"{part.name[:-5]}: {human.size(received)} of {human.size(expected)} "
                        f"({received / expected:.0%})"
                    )
                    next_report += 0.25
        except http.client.IncompleteRead as error:
            # Say it in bytes received, like the check below, not in IncompleteRead's repr.
            received += len(error.partial)
            of = f" of {expected:,}" if expected is not None else ""
            raise DownloadFailed(f"{url}: connection ended after {received:,}{of} bytes") from error
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and received != expected:
        raise DownloadFailed(f"{url}: connection ended after {received:,} of {expected:,} bytes")
    return received


def _verify_gzip(part: Path, file_name: str) -> None:
    """Read the whole gzip stream: its trailer's CRC and length prove the file is complete.

    The byte count cannot: a server may send a Content-Length that is wrong but consistent
    with what it sent, or none at all.
    """
    try:
        with gzip.open(part, "rb") as stream:
            while stream.read(VERIFY_PIECE_BYTES):
                pass
    except gzip.BadGzipFile as error:
        with open(part, "rb") as raw:
            magic = raw.read(4)
        kind = " (it is a Parquet file)" if magic == b"PAR1" else ""
        raise DownloadFailed(
            f"{file_name} is not gzip-compressed{kind}: starts with {magic!r} "
            f"({what_is_read(file_name)})"
        ) from error
    except (OSError, EOFError, zlib.error) as error:
        raise DownloadFailed(f"{file_name} is truncated or corrupt: {error}") from error


@contextlib.contextmanager
def _only_download(landing_dir: Path, file_name: str, log: Callable[[str], None]):
    """Hold the file's download lock: runs fetching the same month take turns.

    Without it two runs would write one `.part` file at once and rename a mix of both.
    The lock is the kernel's, so it is released even when the holder is killed.
    """
    with open(landing_dir / f".{file_name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{file_name}: another run is downloading it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def download(
    base_url: str,
    file_name: str,
    landing_dir: Path,
    *,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    timeout: float = 60.0,
    probe: str | None = None,
    log: Callable[[str], None] = print,
) -> LandedFile:
    """Fetch file_name into landing_dir, reusing a copy an earlier run completed of the
    version the source has now.

    A download lands under a `.part` name and is renamed only once complete (and, for a
    gzip file, once its trailer checks out), so a cut connection can never leave a file that
    a later run takes for whole. `probe` is the source's known-published object (relative to
    the file's URL), which tells its "not published" 403 from its throttling one.
    """
    landing_dir.mkdir(parents=True, exist_ok=True)
    with _only_download(landing_dir, file_name, log):
        return _download(
            base_url,
            file_name,
            landing_dir,
            retries=retries,
            backoff_seconds=backoff_seconds,
            timeout=timeout,
            probe=probe,
            log=log,
        )


def _download(
    base_url, file_name, landing_dir, *, retries, backoff_seconds, timeout, probe, log
) -> LandedFile:
    target = landing_dir / file_name
    # Beside the file, hidden: the version the landed bytes are. Removed before a new copy is
    # renamed into place and written after, so it never vouches for other bytes.
    recorded = landing_dir / f".{file_name}.version"
    url = source_url(base_url, file_name)
    if local_file(url) is not None:
        # A file on disk does not get better by reading it again; remote_file says when the
        # folder lacks it.
        retries = 0
    part = target.with_name(target.name + ".part")

    def retrying(action):
        for attempt in range(1, retries + 2):
            try:
                return action()
            except SourceNotPublished:
                part.unlink(missing_ok=True)
                raise
            except urllib.error.HTTPError as error:
                last_error = not_published_or_refused(url, error, probe, timeout)
                if isinstance(last_error, SourceNotPublished):
                    part.unlink(missing_ok=True)
                    raise last_error from error
            except FileNotFoundError as error:  # file:// and plain paths
                raise SourceNotPublished(f"{url}: no such file") from error
            except urllib.error.URLError as error:
                if isinstance(error.reason, FileNotFoundError):  # how urlopen reports a file:// one
                    raise SourceNotPublished(f"{url}: no such file") from error
                last_error = error
            except Exception as error:  # noqa: BLE001 - classified just below
                last_error = error
            if not _transient(last_error) or attempt > retries:
                part.unlink(missing_ok=True)
                raise DownloadFailed(
                    f"{url}: download failed after {attempt} attempt(s): {last_error}"
                ) from last_error
            delay = backoff_seconds * 2 ** (attempt - 1)
            log(f"{file_name}: attempt {attempt} failed ({last_error}); retrying in {delay:.0f}s")
            time.sleep(delay)

    remote = retrying(lambda: remote_file(base_url, file_name, timeout=timeout, probe=probe))
    if target.exists() and recorded.exists() and recorded.read_text() == remote.version:
        log(
            f"{file_name}: reusing the complete download at {target} "
            f"({human.size(target.stat().st_size)}, unchanged at the source)"
        )
        return LandedFile(target, remote.version)

    def fetch() -> int:
        size = _stream(url, part, timeout, log)
        if file_name.endswith(".gz"):
            _verify_gzip(part, file_name)
        return size

    size = retrying(fetch)
    # The HEAD's version, even should the file be re-uploaded between it and the GET: then
    # the next HEAD differs from it, and the new file is fetched (and the month re-run) again.
    recorded.unlink(missing_ok=True)
    os.replace(part, target)
    recorded.write_text(remote.version)
    log(f"{file_name}: downloaded {human.size(size)} from {url}")
    return LandedFile(target, remote.version)
