"""Local files replaced in one step, and the partial files of dead writers cleared away.

A file is written under a hidden temporary name beside its target and renamed over it, so a
reader meets the old file or the new one. The writer holds a lock on its temporary file for as
long as it writes; the kernel drops the lock when the writer dies, however it dies. So the next
writer of the same target can tell a dead writer's partial file (nobody holds its lock) from a
live one's (two runs may write one staged partition at once) and deletes only the former.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# Room kept free beyond the file itself: a disk filled to the last byte fails everything else.
FREE_SPACE_MARGIN_BYTES = 64 << 20


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


def replace_file(
    path: Path, write: Callable[[BinaryIO], None], size_hint: int = 0, setting: str | None = None
) -> None:
    """Write `path` through `write(file)` aside, then rename it over `path`.

    `size_hint` (bytes about to be written) is checked against the free space first; `setting`
    names what moves the folder, for the error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(path)
    check_free_space(path.parent, size_hint, setting)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(partial, "wb") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            write(out)
            out.flush()
            os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"{path.parent} is full: writing {path.name} failed "
                f"({error.strerror}); free some space there",
            ) from error
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def link_file(source: Path, target: Path) -> None:
    """Make `target` the same file as `source` in one step (a hard link renamed over it): no
    byte is copied, and a reader of `target` sees its old file or `source`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(target)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    os.link(source, partial)
    try:
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
