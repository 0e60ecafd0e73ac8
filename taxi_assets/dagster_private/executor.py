"""Dagster's in-process executor, with a wait for a pool slot that sleeps and hears Ctrl-C.

The upstream defect (Dagster 1.13.27, the installed one): while a step waits for a pool slot,
`inner_plan_execution_iterator` (dagster/_core/execution/plan/execute_plan.py) loops on
`ActiveExecution.get_next_step` and `ActiveExecution.sleep_til_ready` (plan/active.py), which
sleeps only for a positive `InstanceConcurrencyContext.interval_to_next_pending_claim_check()`
(plan/instance_concurrency_context.py). That returns `min([0, *intervals])`, never more than 0,
so the loop asks `claim` for the slot again at once, however far off the retry it scheduled
is: a core at 100% for as long as the pool stays full. And a Ctrl-C (or the UI's terminate)
only sets a flag (`dagster._utils.interrupts`) that this loop never reads. A fix was proposed
upstream (https://github.com/dagster-io/dagster/pull/20367, closed in 2024 without landing).

`PatientInProcessExecutor` is `InProcessExecutor.execute` (dagster/_core/executor/in_process.py)
with a concurrency context whose wait is the time until the next claim attempt is due, and
which stops the run when an interrupt came meanwhile. taxi_assets_tests/test_pool_wait.py fails
once Dagster's own executor sleeps between claims: then this module can go, and run_health's
executor derive from Dagster's `InProcessExecutor`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.executor.in_process import InProcessExecutor
from dagster._utils.interrupts import pop_captured_interrupt

__all__ = ["InstanceConcurrencyContext", "PatientInProcessExecutor", "engine_event"]


class _PatientConcurrencyContext(InstanceConcurrencyContext):
    """Dagster's pool claims, with a wait that sleeps until the next claim attempt is due and,
    when an interrupt came meanwhile, stops the run."""

    def interval_to_next_pending_claim_check(self) -> float:
        if pop_captured_interrupt():
            raise KeyboardInterrupt
        due = [ready_at - time.time() for ready_at in self._pending_timeouts.values()]
        return max(0.0, min(due, default=0.0)) if self._pending_claims else 0.0


def _execution_iterator(job_context, execution_plan, instance_concurrency_context=None):
    with _PatientConcurrencyContext(job_context.instance, job_context.dagster_run) as context:
        yield from inner_plan_execution_iterator(job_context, execution_plan, context)


class PatientInProcessExecutor(InProcessExecutor):
    """`InProcessExecutor` whose steps wait for a pool slot asleep. A subclass may act before
    the first step (`before_steps`), on each event of the steps (`after_event`) and add events
    once they have ended (`closing_events`)."""

    def before_steps(self, plan_context) -> None:
        """Called once, before the steps start."""

    def after_event(self, plan_context, event: DagsterEvent) -> None:
        """Called with each event of the steps, once it has been handed on."""

    def closing_events(self, plan_context, execution_plan) -> Iterator[DagsterEvent]:
        """Events of the run's own after its steps have ended, before the executor's last."""
        yield from ()

    def execute(self, plan_context, execution_plan) -> Iterator[DagsterEvent]:
        # InProcessExecutor.execute, with the concurrency context above and the hooks.
        self.before_steps(plan_context)
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(
                os.getpid(), execution_plan.step_keys_to_execute
            ),
        )
        events = ExecuteRunWithPlanIterable(
            execution_plan=plan_context.execution_plan,
            iterator=_execution_iterator,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=plan_context.execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=self.step_dependency_config,
            ),
        )
        for event in events:
            yield event
            self.after_event(plan_context, event)
        yield from self.closing_events(plan_context, execution_plan)
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(
                os.getpid(), execution_plan.step_keys_to_execute
            ),
        )


def engine_event(plan_context, message: str, metadata: dict) -> DagsterEvent:
    """An event of the run (not of a step) on its page, with metadata."""
    return DagsterEvent.engine_event(
        plan_context, message, event_specific_data=EngineEventData(metadata=metadata)
    )
