"""The due-run decision of job schedules (models.schedule), one test per rule of the reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchyard.models.errors import BatchError
from batchyard.models.schedule import (
    Decision,
    ScheduleConfig,
    decide,
    due_after_update,
    first_due,
    parse_config,
)

T0 = datetime(2025, 3, 19, 18, 34, 21, tzinfo=UTC)
M = timedelta(minutes=1)
H = timedelta(hours=1)


def test_first_run_is_due_at_creation_or_do_not_run_until() -> None:
    assert first_due(ScheduleConfig(), T0) == T0
    assert first_due(ScheduleConfig(do_not_run_until=T0 + H), T0) == T0 + H


def test_due_run_creates_a_job_and_the_next_is_one_interval_later() -> None:
    d = decide(ScheduleConfig(recurrence=timedelta(days=1)), T0, False, T0)
    assert d == Decision(True, T0 + timedelta(days=1), False, run_due=T0)


def test_not_yet_due_waits() -> None:
    d = decide(ScheduleConfig(recurrence=H), T0 + H, False, T0)
    assert d == Decision(False, T0 + H, False)


def test_one_shot_creates_one_job_then_has_no_run_left() -> None:
    d = decide(ScheduleConfig(), T0, False, T0 + timedelta(seconds=5))
    assert d.create_job and d.next_due is None and not d.complete


def test_one_shot_completes_when_its_job_finished() -> None:
    assert decide(ScheduleConfig(), None, True, T0) == Decision(False, None, False)
    assert decide(ScheduleConfig(), None, False, T0) == Decision(False, None, True)


def test_due_run_waits_while_the_previous_job_is_active() -> None:
    cfg = ScheduleConfig(recurrence=H, start_window=10 * M)
    assert decide(cfg, T0, True, T0 + 5 * M) == Decision(False, T0, False)


def test_waiting_run_starts_when_the_previous_job_finishes_inside_the_window() -> None:
    cfg = ScheduleConfig(recurrence=H, start_window=10 * M)
    d = decide(cfg, T0, False, T0 + 9 * M)
    assert d.create_job and d.run_due == T0 and d.next_due == T0 + H


def test_run_is_skipped_once_its_start_window_passed() -> None:
    cfg = ScheduleConfig(recurrence=H, start_window=10 * M)
    d = decide(cfg, T0, True, T0 + 11 * M)
    assert d == Decision(False, T0 + H, False, skipped=1)
    # the same when the previous job finished only after the window: that run is lost, not carried
    d = decide(cfg, T0, False, T0 + 11 * M)
    assert not d.create_job and d.next_due == T0 + H and d.skipped == 1


def test_many_missed_runs_are_skipped_arithmetically_to_the_current_one() -> None:
    cfg = ScheduleConfig(recurrence=M, start_window=30 * timedelta(seconds=1))
    now = T0 + timedelta(days=365, seconds=10)  # a year of downtime: inside the current run's window
    d = decide(cfg, T0, False, now)
    assert d.create_job and d.run_due == T0 + timedelta(days=365)
    assert d.skipped == 365 * 24 * 60
    assert d.next_due == T0 + timedelta(days=365) + M


def test_one_shot_missing_its_window_ends_without_a_job() -> None:
    cfg = ScheduleConfig(start_window=5 * M)
    assert decide(cfg, T0, False, T0 + 6 * M) == Decision(False, None, True, skipped=1)


def test_start_window_not_shorter_than_the_recurrence_is_infinite() -> None:
    cfg = ScheduleConfig(recurrence=H, start_window=2 * H)
    assert cfg.window is None
    d = decide(cfg, T0, False, T0 + 5 * H + M)  # waited five intervals behind a long job
    assert d.create_job and d.run_due == T0
    # missed runs are not made up: the next one is the first due time still ahead
    assert d.next_due == T0 + 6 * H


def test_default_start_window_is_infinite() -> None:
    cfg = ScheduleConfig(recurrence=H)
    assert decide(cfg, T0, True, T0 + 100 * H) == Decision(False, T0, False)


def test_no_job_after_do_not_run_after_and_the_schedule_completes() -> None:
    end = T0 + 30 * M
    cfg = ScheduleConfig(recurrence=H, do_not_run_after=end)
    d = decide(cfg, T0, False, T0)
    assert d.create_job and d.next_due is None  # the next run (T0+1h) is after the end
    assert decide(cfg, None, False, T0 + M) == Decision(False, None, True)


def test_do_not_run_after_while_a_run_waits_ends_it_once_the_job_finishes() -> None:
    end = T0 + 30 * M
    cfg = ScheduleConfig(recurrence=10 * M, do_not_run_after=end)
    assert decide(cfg, T0 + 20 * M, True, end + M) == Decision(False, None, False)
    assert decide(cfg, T0 + 20 * M, False, end + M) == Decision(False, None, True)


def test_update_anchors_the_next_run_on_the_last_run() -> None:
    cfg = ScheduleConfig(recurrence=5 * H)
    assert due_after_update(cfg, T0, T0 + M) == T0 + 5 * H
    assert due_after_update(ScheduleConfig(), T0, T0 + M) is None  # a one-shot that ran has no run left
    assert due_after_update(cfg, None, T0 + M) == T0 + M  # never ran: due now
    later = ScheduleConfig(recurrence=5 * H, do_not_run_until=T0 + 10 * H)
    assert due_after_update(later, T0, T0 + M) == T0 + 10 * H


@pytest.mark.parametrize("name", ["startWindow", "recurrenceInterval"])
@pytest.mark.parametrize("value", ["PT59S", "PT0S", "PT30S"])
def test_intervals_under_one_minute_are_400(name: str, value: str) -> None:
    with pytest.raises(BatchError) as ei:
        parse_config({name: value})
    assert ei.value.status == 400 and ei.value.code == "InvalidPropertyValue"
    assert ("PropertyName", f"schedule.{name}") in ei.value.values


def test_one_minute_is_allowed_and_times_parse() -> None:
    cfg = parse_config(
        {"recurrenceInterval": "PT1M", "startWindow": "PT1M", "doNotRunUntil": "2025-03-19T18:34:21Z"}
    )
    assert cfg.recurrence == M and cfg.start_window == M and cfg.do_not_run_until == T0
    with pytest.raises(BatchError):
        parse_config({"doNotRunAfter": "tomorrow"})
