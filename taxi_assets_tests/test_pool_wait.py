"""A step waiting for a pool slot: Dagster's own in-process executor asks for the slot again
and again before the retry it scheduled is due, never sleeping; the project's executor sleeps
until each retry is due.

The first test pins the upstream defect that taxi_assets/dagster_private/executor.py works
around, and fails once Dagster fixes it: then that workaround can go. Both count claim attempts,
never time. The spies on `InstanceConcurrencyContext.claim` and on the storage's
`claim_concurrency_slot` only observe, passing every call through; the pool is Dagster's own,
in a real SQLite instance, its one slot held by the test as another run would hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pytest

from taxi_assets import run_health
from taxi_assets.dagster_private import InstanceConcurrencyContext

POOL = "one_writer_at_a_time"
HOLDER = "a-run-holding-the-slot"
# The holder lets go (as a run that finishes would) once the waiting step has asked before its
# retry was due, or has been refused this often: neither executor then waits for ever.
REFUSALS_BEFORE_LETTING_GO = 3


@dg.op(pool=POOL)
def write_through_the_pool() -> None:
    pass


@dg.job(executor_def=dg.in_process_executor)
def with_dagsters_executor():
    write_through_the_pool()


@dg.job(executor_def=run_health.in_process_executor)
def with_the_projects_executor():
    write_through_the_pool()


@dataclass
class ClaimAttempts:
    asked: int = 0  # the step's claims of a slot
    refused: int = 0  # of those, the ones the storage answered "no slot"
    before_due: int = 0  # of those, the ones answered "no" without asking the storage: too soon


@pytest.fixture
def pool_held_by_another_run(tmp_path):
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 1)
        assert storage.claim_concurrency_slot(POOL, HOLDER, "writer").is_claimed
        yield instance


def watched_run(instance, job, monkeypatch) -> ClaimAttempts:
    attempts = ClaimAttempts()
    storage = instance.event_log_storage
    asked_storage = []
    storage_claim = storage.claim_concurrency_slot

    def claim_concurrency_slot(*args, **kwargs):
        status = storage_claim(*args, **kwargs)
        asked_storage.append(status.is_claimed)
        return status

    context_claim = InstanceConcurrencyContext.claim

    def claim(self, concurrency_key, step_key, step_priority=0):
        storage_answers = len(asked_storage)
        granted = context_claim(self, concurrency_key, step_key, step_priority)
        attempts.asked += 1
        if len(asked_storage) == storage_answers:
            attempts.before_due += not granted
        else:
            attempts.refused += not asked_storage[-1]
        if attempts.before_due or attempts.refused >= REFUSALS_BEFORE_LETTING_GO:
            storage.free_concurrency_slots_for_run(HOLDER)
        return granted

    monkeypatch.setattr(storage, "claim_concurrency_slot", claim_concurrency_slot)
    monkeypatch.setattr(InstanceConcurrencyContext, "claim", claim)
    with dg.execute_job(dg.reconstructable(job), instance) as result:
        assert result.success
    assert attempts.refused >= 1, "the step never waited: the pool's slot was not held"
    return attempts


def test_dagsters_executor_asks_for_a_held_slot_again_before_its_retry_is_due(
    pool_held_by_another_run, monkeypatch
):
    attempts = watched_run(pool_held_by_another_run, with_dagsters_executor, monkeypatch)

    assert attempts.before_due > 0, (
        "Dagster's in-process executor now waits for a step's next claim of a pool slot "
        f"({attempts.asked} claims, {attempts.refused} refused, none too soon): the workaround "
        "can go now. Remove taxi_assets/dagster_private/executor.py and derive run_health's "
        "executor from Dagster's InProcessExecutor."
    )


def test_the_projects_executor_sleeps_until_each_retry_of_a_held_slot_is_due(
    pool_held_by_another_run, monkeypatch
):
    attempts = watched_run(pool_held_by_another_run, with_the_projects_executor, monkeypatch)

    assert attempts.before_due == 0, (
        f"of {attempts.asked} claims, {attempts.before_due} came before their retry was due"
    )
    assert attempts.refused >= REFUSALS_BEFORE_LETTING_GO
