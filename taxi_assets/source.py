"""Fetching the monthly TLC files: streamed, retried, verified, and never half-taken."""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

CHUNK_BYTES = 1 << 20


class SourceNotPublished(FileNotFoundError):
    """The source has no file for this month (yet)."""


class DownloadFailed(IOError):
    """The file could not be fetched completely, even after retrying."""


def source_url(base_url: str, file_name: str) -> str:
    if "://" not in base_url:  # a plain folder path
        return Path(base_url, file_name).resolve().as_uri()
    return f"{base_url.rstrip('/')}/{file_name}"


def _transient(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code in (408, 429)
    return isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError,
                              http.client.HTTPException, DownloadFailed))


def _stream(url: str, part: Path, timeout: float, log: Callable[[str], None]) -> int:
    """Copy url to part; the byte count must match the server's Content-Length."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
        expected = response.headers.get("Content-Length")
        expected = int(expected) if expected is not None else None
        received, next_report = 0, 0.0
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            received += len(chunk)
            if expected and received / expected >= next_report:
                log(f"{part.name[:-5]}: {received:,} of {expected:,} bytes "
                    f"({received / expected:.0%})")
                next_report += 0.25
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and received != expected:
        raise DownloadFailed(
            f"{url}: connection ended after {received:,} of {expected:,} bytes"
        )
    return received


def download(
    base_url: str,
    file_name: str,
    landing_dir: Path,
    *,
    retries: int = 3,
    backoff_seconds: float = 1.0,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Path:
    """Fetch file_name into landing_dir, reusing a copy an earlier run completed.

    A download lands under a `.part` name and is renamed only once complete, so a cut
    connection can never leave a file that a later run takes for whole.
    """
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / file_name
    if target.exists():
        log(f"{file_name}: reusing the complete download at {target} "
            f"({target.stat().st_size:,} bytes)")
        return target
    url = source_url(base_url, file_name)
    part = target.with_name(target.name + ".part")
    for attempt in range(1, retries + 2):
        try:
            size = _stream(url, part, timeout, log)
            break
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise SourceNotPublished(f"{url}: not published (HTTP 404)") from error
            last_error: Exception = error
        except FileNotFoundError as error:  # file:// and plain paths
            raise SourceNotPublished(f"{url}: no such file") from error
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
    os.replace(part, target)
    log(f"{file_name}: downloaded {size:,} bytes from {url}")
    return target

