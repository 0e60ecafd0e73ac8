"""Fetching the monthly TLC files: streamed, retried, verified, versioned, never half-taken.

Every file has a version: its ETag, or its Last-Modified time and size when the server sends
no ETag (a folder's files: modification time and size). A landed copy is reused only while the
source still has that version, so a re-uploaded file is fetched again.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import gzip
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taxi_assets import human
from taxi_assets.storage.atomic_files import check_free_space

CHUNK_BYTES = 1 << 20


class SourceNotPublished(FileNotFoundError):
    """The source has no file for this month (yet)."""


class DownloadFailed(IOError):
    """The file could not be fetched completely, even after retrying."""


class SourceRefused(DownloadFailed):
    """HTTP 403 while the source's known-published object was not reachable either: throttled."""


@dataclass(frozen=True)
class SourceFile:
    """What the source says about a file without sending it."""

    url: str
    version: str


@dataclass(frozen=True)
class LandedFile:
    path: Path
    version: str


def source_url(base_url: str, file_name: str) -> str:
    if "://" not in base_url:  # a plain folder path
        return Path(base_url, file_name).resolve().as_uri()
    return f"{base_url.rstrip('/')}/{file_name}"


def _version(headers, size: int | None) -> str:
    etag = headers.get("ETag")
    if etag:
        return f"etag {etag}"
    # Without either, the size alone: weaker, but a re-upload that changes the size is seen.
    modified = headers.get("Last-Modified")
    return ", ".join(
        filter(
            None,
            [modified and f"modified {modified}", f"{size if size is not None else '?'} bytes"],
        )
    )


def _what_is_read(file_name: str) -> str:
    """The names and format a source is read for, from one month's file name."""
    pattern = re.sub(r"\d{4}-\d{2}", "YYYY-MM", file_name)
    kind = "gzip-compressed CSV" if file_name.endswith(".csv.gz") else file_name.partition(".")[2]
    return f"the source is read for files named {pattern}, {kind}"


def _local_file(url: str) -> Path | None:
    """The path of a folder or file:// source's file; None for a network source."""
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else None


# How to make a dataset's files when a folder has none (the README's offline source).
MAKE_FILES = {
    "green_tripdata": "make green files from the real yellow rows with `uv run --frozen python "
    "-m taxi_assets_tests.green_files FOLDER YYYY-MM…` (docs/sources.md)",
}


def _not_published_locally(path: Path, file_name: str) -> SourceNotPublished:
    stem = file_name.partition(".")[0]
    others = sorted(p.name for p in path.parent.glob(f"{stem}*") if p.name != file_name)
    found = f"; the folder has {others}, in a name or format not read" if others else ""
    if not others:
        found = "; " + _what_the_folder_holds(path.parent, file_name)
    return SourceNotPublished(
        f"{path.parent}: {file_name} is not published there ({_what_is_read(file_name)}){found}"
    )


def _what_the_folder_holds(folder: Path, file_name: str) -> str:
    """The months the folder has of the file's dataset, or what else it has and how to make
    the dataset's files."""
    prefix = re.sub(r"_\d{4}-\d{2}.*", "", file_name)
    suffix = file_name.partition(".")[2]
    months = sorted(
        p.name[len(prefix) + 1 : len(prefix) + 8] for p in folder.glob(f"{prefix}_????-??.{suffix}")
    )
    if months:
        listed = ", ".join(months) if len(months) <= 6 else f"{months[0]} to {months[-1]}"
        return f"the folder holds {prefix} files of {len(months)} month(s): {listed}"
    others = sorted({re.sub(r"_\d{4}-\d{2}.*", "", p.name) for p in folder.glob("*_????-??.*")})
    held = f"only {', '.join(others)} files" if others else "no monthly trip files"
    how = f"; {MAKE_FILES[prefix]}" if prefix in MAKE_FILES else ""
    return f"the folder holds {held}{how}"


class _KeepHead(urllib.request.HTTPRedirectHandler):
    """Follows redirects (GitHub release assets redirect to a CDN) without turning HEAD into GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def _head(url: str, timeout: float):
    opener = urllib.request.build_opener(_KeepHead)
    return opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout)


def _not_published_or_refused(
    url: str, error: urllib.error.HTTPError, probe: str | None, timeout: float
) -> Exception:
    """What an HTTP error on a month's file means: not published, or a fault to retry.

    404 and 410 say "not published". A source that hides its listing (the TLC's CloudFront)
    answers 403 instead, and also 403 when it throttles: only if its known-published `probe`
    object answers at the same moment is the 403 about the file.
    """
    if error.code in (404, 410):
        return SourceNotPublished(f"{url}: not published (HTTP {error.code})")
    if error.code == 403 and probe:
        probe_url = urllib.parse.urljoin(url, probe)
        try:
            with _head(probe_url, timeout):
                pass
        except (urllib.error.URLError, OSError, http.client.HTTPException) as probe_error:
            return SourceRefused(
                f"{url}: HTTP 403, and {probe_url} is not reachable either "
                f"({probe_error}): throttled or down, which says nothing "
                "of the file"
            )
        return SourceNotPublished(f"{url}: not published (HTTP 403 while {probe_url} answers 200)")
    return error


def remote_file(
    base_url: str, file_name: str, *, timeout: float, probe: str | None = None
) -> SourceFile:
    """The file's URL and version, by HEAD (no download). Raises SourceNotPublished."""
    url = source_url(base_url, file_name)
    local = _local_file(url)
    if local is not None:
        if not local.is_file():
            raise _not_published_locally(local, file_name)
        status = local.stat()
        modified = email.utils.formatdate(status.st_mtime, usegmt=True)
        return SourceFile(
            url, f"modified {modified} ({status.st_mtime_ns} ns), {status.st_size} bytes"
        )
    try:
        with _head(url, timeout) as response:
            size = response.headers.get("Content-Length")
            return SourceFile(url, _version(response.headers, int(size) if size else None))
    except urllib.error.HTTPError as error:
        raise _not_published_or_refused(url, error, probe, timeout) from error


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
            while stream.read(CHUNK_BYTES):
                pass
    except gzip.BadGzipFile as error:
        with open(part, "rb") as raw:
            magic = raw.read(4)
        kind = " (it is a Parquet file)" if magic == b"PAR1" else ""
        raise DownloadFailed(
            f"{file_name} is not gzip-compressed{kind}: starts with {magic!r} "
            f"({_what_is_read(file_name)})"
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
    if _local_file(url) is not None:
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
                last_error = _not_published_or_refused(url, error, probe, timeout)
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
