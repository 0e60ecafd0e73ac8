"""What a source of monthly TLC files says about one without sending it: its URL, its version,
and whether it is published at all (download.py fetches it).

Every file has a version: its ETag, or its Last-Modified time and size when the server sends
no ETag (a folder's files: modification time and size). A landed copy is reused only while the
source still has that version, so a re-uploaded file is fetched again.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path


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


def what_is_read(file_name: str) -> str:
    """The names and format a source is read for, from one month's file name."""
    pattern = re.sub(r"\d{4}-\d{2}", "YYYY-MM", file_name)
    kind = "gzip-compressed CSV" if file_name.endswith(".csv.gz") else file_name.partition(".")[2]
    return f"the source is read for files named {pattern}, {kind}"


def local_file(url: str) -> Path | None:
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
        f"{path.parent}: {file_name} is not published there ({what_is_read(file_name)}){found}"
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


def not_published_or_refused(
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
    local = local_file(url)
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
        raise not_published_or_refused(url, error, probe, timeout) from error
