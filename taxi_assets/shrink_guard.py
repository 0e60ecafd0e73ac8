"""The shrink guard: new content may not replace materialized rows with far fewer, unasked.

A valid file can still be a wrong one: a re-upload cut short, a month whose rows are all
filtered out, an empty file. Loaded, it would replace a good month in every sink. So a month
(the blocking check `no_shrink` on a dataset's cleaned trips) or a range of days (the daily
lake sinks, before they write) that would hold fewer than `MIN_KEPT_FRACTION` of the rows its
last materialization holds is refused; the run tag `taxi/allow_shrink=true` lets a user replace it
on purpose. Real months differ from one re-upload to the next by a few rows, and from one
month to the next by far less than half, so half is a line only a broken file crosses.
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOW_SHRINK_TAG = "taxi/allow_shrink"
MIN_KEPT_FRACTION = 0.5


def shrink_allowed(run_tags: Mapping[str, str]) -> bool:
    return run_tags.get(ALLOW_SHRINK_TAG, "").lower() in ("true", "1", "yes")


def shrink_refusal(what: str, materialized: int | None, new: int) -> str | None:
    """Why `new` rows may not replace the `materialized` ones (None: they may)."""
    if not materialized or new >= MIN_KEPT_FRACTION * materialized:
        return None
    return (
        f"{what}: the new content has {new:,} rows where the last materialization holds "
        f"{materialized:,} (less than {MIN_KEPT_FRACTION:.0%}); nothing was replaced. If "
        f"that is intended, run again with the tag {ALLOW_SHRINK_TAG}=true"
    )


class ShrinkRefused(ValueError):
    """New content would replace materialized rows with far fewer; see the module's doc."""
