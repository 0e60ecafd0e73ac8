"""Two writers of one file at once: the second clears the partial files of dead writers while
the first is starting its own. The first must still publish, whole.

The moment that matters (after a writer made its partial file, before it locked or renamed
it) lasts microseconds, so two real runs meet it only now and then. These tests put the other
writer's sweep exactly there by wrapping the one call before that moment; the files, locks and
renames are the real ones.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

from taxi_assets.storage import atomic_files


def partials_beside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def test_a_writer_whose_new_partial_is_swept_before_it_locks_it_still_publishes(
    tmp_path, monkeypatch
):
    target = tmp_path / "2021-01-01.parquet"
    target.write_bytes(b"old")
    sweeps: list[list[Path]] = []
    real_flock = atomic_files.fcntl.flock

    def flock_after_a_sweep(file, operation):
        # The other writer's sweep runs before this writer's first blocking lock.
        if operation == atomic_files.fcntl.LOCK_EX and not sweeps:
            sweeps.append(atomic_files.remove_dead_partials(target))
        return real_flock(file, operation)

    fcntl_seen_by_writer = types.SimpleNamespace(
        **{name: getattr(atomic_files.fcntl, name) for name in ("LOCK_EX", "LOCK_SH", "LOCK_NB")},
        flock=flock_after_a_sweep,
    )
    monkeypatch.setattr(atomic_files, "fcntl", fcntl_seen_by_writer)

    atomic_files.replace_file(target, lambda out: out.write(b"new"))

    assert len(sweeps[0]) == 1, "the sweep did not take the writer's new file"
    assert target.read_bytes() == b"new"
    assert partials_beside(target) == []


def test_a_link_swept_before_it_is_renamed_into_place_is_not_taken_for_a_dead_writers(
    tmp_path, monkeypatch
):
    source, target = tmp_path / "landed.csv.gz", tmp_path / "kept" / "month.csv.gz"
    source.write_bytes(b"the month")
    swept: list[list[Path]] = []

    class OsWithASweepAfterLink(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def link(src, dst):
            os.link(src, dst)
            swept.append(atomic_files.remove_dead_partials(target))

    monkeypatch.setattr(atomic_files, "os", OsWithASweepAfterLink())

    atomic_files.link_file(source, target)

    assert swept == [[]], "a live writer's link was taken for a dead writer's"
    assert target.read_bytes() == b"the month"
    assert os.stat(target).st_ino == os.stat(source).st_ino
    assert partials_beside(target) == []


def test_a_dead_writers_partial_is_cleared_by_the_next_writer(tmp_path):
    target = tmp_path / "2021-01-01.parquet"
    dead = target.with_name(atomic_files.partial_name(target.name))
    dead.write_bytes(b"half a fi")

    atomic_files.replace_file(target, lambda out: out.write(b"whole"))

    assert target.read_bytes() == b"whole"
    assert partials_beside(target) == []
