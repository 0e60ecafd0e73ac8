"""Files replaced in one step, and the partial files of dead writers cleared away.

One primitive for every writer: a file is written under a hidden temporary name beside its
target (`.{name}.{random}.tmp`; the leading dot keeps pyarrow's dataset discovery away) and
then put at the target in one step, so a reader meets the old file or the new one.

On local disk the partial file is renamed over the target. The writer holds a lock on its
partial file for as long as it writes; the kernel drops the lock when the writer dies, however
it dies. So the next writer of the same target can tell a dead writer's partial file (nobody
holds its lock) from a live one's (two runs may write one staged partition at once) and deletes
only the former. On GCS (or any pyarrow filesystem that is not local) the bytes go to a local
spool file, are uploaded in large pieces to the hidden object, and the server then moves that
to the target: an object is never readable half uploaded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

# Room kept free beyond the file itself: a disk filled to the last byte fails everything else.
FREE_SPACE_MARGIN_BYTES = 64 << 20
# Uploads in pieces this large: GCS takes 1 MiB writes several times slower.
UPLOAD_PIECE_BYTES = 16 << 20


def partial_name(name: str) -> str:
    """The hidden name a new version of file `name` is written under, beside it."""
    return f".{name}.{uuid.uuid4().hex}.tmp"


def _partials(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def remove_dead_partials(path: Path) -> list[Path]:
    """Delete the temporary files of writers of `path` that are gone; returns what went."""
    removed = []
    for partial in _partials(path):
        try:
            with open(partial, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                partial.unlink()
                removed.append(partial)
        except (BlockingIOError, FileNotFoundError):
            pass  # a live writer's, or already gone
    return removed


def check_free_space(folder: Path, needed_bytes: int, setting: str | None = None) -> None:
    """Fail before writing when `folder`'s disk cannot take `needed_bytes`, naming the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed_bytes + FREE_SPACE_MARGIN_BYTES:
        fix = f" or point {setting} elsewhere" if setting else ""
        raise OSError(
            errno.ENOSPC,
            f"{folder} has {free:,} bytes free, and writing needs "
            f"{needed_bytes:,} (+{FREE_SPACE_MARGIN_BYTES:,} kept free): "
            f"free some space there{fix}",
        )


def _locked_new_partial(path: Path) -> tuple[Path, BinaryIO]:
    """A new partial file of `path`, created and locked.

    Between creating a file and locking it, another writer's `remove_dead_partials` can take
    it for a dead writer's and delete it. The cleaner deletes only what it holds locked, so once
    this writer holds the lock its file is either still named (and safe) or already unlinked,
    and then it simply makes another.
    """
    while True:
        partial = path.with_name(partial_name(path.name))
        file = open(partial, "xb")  # noqa: SIM115 - held until publish
        fcntl.flock(file, fcntl.LOCK_EX)
        if os.fstat(file.fileno()).st_nlink > 0:
            return partial, file
        file.close()


class PartialFile:
    """A local file being written aside `path`, locked; `publish()` renames it over `path`."""

    def __init__(self, path: Path, size_hint: int = 0, setting: str | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_partials(path)
        check_free_space(path.parent, size_hint, setting)
        self.path = path
        self.partial, self.file = _locked_new_partial(path)

    def publish(self) -> None:
        self.file.flush()
        os.replace(self.partial, self.path)
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


def replace_file(
    path: Path, write: Callable[[BinaryIO], None], size_hint: int = 0, setting: str | None = None
) -> None:
    """Write `path` through `write(file)` aside, then rename it over `path`.

    `size_hint` (bytes about to be written) is checked against the free space first; `setting`
    names what moves the folder, for the error.
    """
    pending = PartialFile(path, size_hint, setting)
    try:
        write(pending.file)
        pending.publish()
    except OSError as error:
        pending.discard()
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"{path.parent} is full: writing {path.name} failed "
                f"({error.strerror}); free some space there",
            ) from error
        raise
    except BaseException:
        pending.discard()
        raise


def link_file(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` in one step (a hard link renamed over it): no
    byte is copied, and a reader of `target` sees its old file or `source`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(target)
    partial = target.with_name(partial_name(target.name))
    with open(source, "rb") as held:
        # The partial is `source` under another name: a shared lock on it tells a concurrent
        # `remove_dead_partials` that a live writer owns it, and other links of `source` go on.
        fcntl.flock(held, fcntl.LOCK_SH)
        os.link(source, partial)
        try:
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


# Why os.link refuses where a copy would do: another filesystem, one without hard links, or a
# file at its link limit.
_CANNOT_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP}


def link_or_copy_file(source: Path, target: Path, setting: str | None = None) -> None:
    """Make `target` the same file as `source` (link_file); where no hard link can be made,
    a copy written aside and renamed over it (replace_file). Either way in one step."""
    try:
        link_file(source, target)
        return
    except OSError as error:
        if error.errno not in _CANNOT_LINK:
            raise
    with open(source, "rb") as original:
        replace_file(
            target,
            lambda out: shutil.copyfileobj(original, out, UPLOAD_PIECE_BYTES),
            size_hint=source.stat().st_size,
            setting=setting,
        )


def is_local(fs: pafs.FileSystem) -> bool:
    base = fs.base_fs if isinstance(fs, pafs.SubTreeFileSystem) else fs
    return isinstance(base, pafs.LocalFileSystem)


def local_path(fs: pafs.FileSystem, path: str) -> Path:
    return Path(fs.base_path, path) if isinstance(fs, pafs.SubTreeFileSystem) else Path(path)


class PendingObject:
    """A file of a pyarrow filesystem being written as a stream (`stream`); `publish()` makes
    it visible at `path`, whole, and `discard()` leaves the file at `path` as it was."""

    def __init__(self, fs: pafs.FileSystem, path: str, setting: str | None = None):
        self.fs, self.path = fs, path
        self._spool = self._local = self._size = None
        parent, _, file_name = path.rpartition("/")
        if is_local(fs):
            # Only local disk gets folders (creating them on GCS adds placeholder objects).
            self._local = PartialFile(local_path(fs, path), setting=setting)
            self._hidden = "/".join(filter(None, [parent, self._local.partial.name]))
            self.stream = fs.open_output_stream(self._hidden)
        else:
            self._hidden = "/".join(filter(None, [parent, partial_name(file_name)]))
            self._spool = tempfile.NamedTemporaryFile(prefix="taxi-lake-", suffix=".parquet")
            self.stream = pa.OSFile(self._spool.name, "wb")

    @property
    def hidden(self) -> str:
        """The hidden name the bytes are written under until published."""
        return self._hidden

    def stage(self) -> int:
        """Make the written bytes whole under the hidden name, not yet at `path`; returns their
        size. A dead writer's staged object is published by whoever recorded its hidden name
        (`publish_staged`); until then no reader sees it."""
        if self._size is None:
            self._size = self.stream.tell()
            self.stream.close()
            if self._spool is not None:
                with (
                    open(self._spool.name, "rb") as spool,
                    self.fs.open_output_stream(self._hidden) as out,
                ):
                    while piece := spool.read(UPLOAD_PIECE_BYTES):
                        out.write(piece)
                self._close_spool()
        return self._size

    def publish(self) -> int:
        """Put the written bytes at `path` in one step; returns their size."""
        size = self.stage()
        if self._local is not None:
            self._local.publish()
        else:
            self.fs.move(self._hidden, self.path)
        return size

    def release(self) -> None:
        """Let go of a staged object without publishing or deleting it (it is recorded for
        `publish_staged`); on disk this drops the writer's lock on the hidden file."""
        if self._local is not None:
            self._local.file.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.close()
        # Best effort: with the store unreachable, a hidden object was never finalised either.
        if self._local is not None:
            with contextlib.suppress(OSError):
                self._local.discard()
            return
        with contextlib.suppress(OSError):
            if self.fs.get_file_info(self._hidden).type != pafs.FileType.NotFound:
                self.fs.delete_file(self._hidden)
        self._close_spool()

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def publish_staged(fs: pafs.FileSystem, hidden: str, path: str) -> bool:
    """Put a staged object (`PendingObject.stage`) at `path` in one step: a rename on disk, a
    server-side move on GCS. False when nothing is at `hidden` (already published, or gone)."""
    if fs.get_file_info(hidden).type == pafs.FileType.NotFound:
        return False
    fs.move(hidden, path)
    return True
