"""When a job schedule creates its next job: the due-run decision, pure (time comes in as an argument).

The rules (reference semantics/job-schedules.md): the first run is due at `doNotRunUntil` or at creation; each
later run is due one `recurrenceInterval` after the previous due time; at most one job of a schedule is active,
so a due run waits for it, and is lost once `startWindow` has passed since its due time (`startWindow` >=
`recurrenceInterval` is infinite); no job is created after `doNotRunAfter`; a schedule with no run left and no
active job is complete. Runs that were missed are not made up: after a late run the next one is the first due
time still ahead (decision 0080).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from batchyard.models import errors
from batchyard.models.clock import parse_time
from batchyard.models.decode import parse_duration

MINIMUM_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class ScheduleConfig:
    """A parsed `schedule` (BatchJobScheduleConfiguration); None = not given."""

    do_not_run_until: datetime | None = None
    do_not_run_after: datetime | None = None
    start_window: timedelta | None = None
    recurrence: timedelta | None = None

    @property
    def window(self) -> timedelta | None:
        """The effective start window: None (infinite) when unset or not shorter than the recurrence."""
        if self.start_window is None:
            return None
        if self.recurrence is not None and self.start_window >= self.recurrence:
            return None
        return self.start_window


@dataclass(frozen=True)
class Decision:
    """What a schedule does now: create a job (for `run_due`), the due time it waits for next, or complete."""

    create_job: bool
    next_due: datetime | None
    complete: bool
    run_due: datetime | None = None
    skipped: int = 0


def parse_config(schedule: dict[str, object] | None) -> ScheduleConfig:
    """Check and parse a wire `schedule`; the 1-minute minimums are the service's 400s."""
    s = schedule or {}

    def when(name: str) -> datetime | None:
        v = s.get(name)
        if v is None:
            return None
        try:
            return parse_time(str(v))
        except ValueError:
            raise errors.invalid_property_value(f"schedule.{name}", v) from None

    def span(name: str) -> timedelta | None:
        v = s.get(name)
        if v is None:
            return None
        try:
            td = parse_duration(str(v))
        except ValueError:
            raise errors.invalid_property_value(f"schedule.{name}", v) from None
        if td < MINIMUM_INTERVAL:
            raise errors.invalid_property_value(
                f"schedule.{name}", v, f"The {name} must be at least 1 minute"
            )
        return td

    return ScheduleConfig(
        do_not_run_until=when("doNotRunUntil"),
        do_not_run_after=when("doNotRunAfter"),
        start_window=span("startWindow"),
        recurrence=span("recurrenceInterval"),
    )


def first_due(cfg: ScheduleConfig, created: datetime) -> datetime:
    """The first run: at `doNotRunUntil`, or right away."""
    return cfg.do_not_run_until or created


def due_after_update(cfg: ScheduleConfig, last_due: datetime | None, now: datetime) -> datetime | None:
    """The next due time once the schedule changed: anchored on the last run that created a job, if any
    (recording: nextRunTime = that run + the new recurrenceInterval); a one-shot schedule that already ran
    has no run left."""
    if last_due is None:
        return first_due(cfg, now)
    if cfg.recurrence is None:
        return None
    nxt = last_due + cfg.recurrence
    if cfg.do_not_run_until is not None and nxt < cfg.do_not_run_until:
        nxt = cfg.do_not_run_until
    return nxt


def _after(due: datetime, step: timedelta, now: datetime) -> datetime:
    """The first `due + k*step` (k >= 1) later than `now`."""
    k = max(1, (now - due) // step + 1)
    return due + k * step


def decide(cfg: ScheduleConfig, due: datetime | None, job_active: bool, now: datetime) -> Decision:
    """The due-run decision for an active schedule whose pending run is `due` (None: no run left)."""
    skipped = 0
    end = cfg.do_not_run_after
    while due is not None:
        if end is not None and (due > end or now > end):
            # no job is created after doNotRunAfter: the schedule ends once its current job has finished
            return Decision(False, None, not job_active, skipped=skipped)
        if now < due:
            return Decision(False, due, False, skipped=skipped)
        window = cfg.window
        if window is not None and now > due + window:
            # this run's start window has passed: the opportunity is lost
            if cfg.recurrence is None:
                return Decision(False, None, not job_active, skipped=skipped + 1)
            latest = due + ((now - due) // cfg.recurrence) * cfg.recurrence  # the last due time <= now
            skipped += (latest - due) // cfg.recurrence
            due = latest
            if now > due + window:
                skipped += 1
                due = due + cfg.recurrence
            continue
        if job_active:
            return Decision(False, due, False, skipped=skipped)  # waits for the active job
        nxt = None if cfg.recurrence is None else _after(due, cfg.recurrence, now)
        if nxt is not None and end is not None and nxt > end:
            nxt = None
        return Decision(True, nxt, False, run_due=due, skipped=skipped)
    return Decision(False, None, not job_active, skipped=skipped)
