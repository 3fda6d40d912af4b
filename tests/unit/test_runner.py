"""The agent's task runner and node layout: real processes, as a task on a Linux Batch node sees them."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchyard.agent.layout import NodeLayout, TaskEnvInputs, user_identity_label
from batchyard.agent.runner import RunResult, RunSpec, TaskProcess

JOB = "job-a"


def _inputs(task_id: str | None = "t1", **overrides: object) -> TaskEnvInputs:
    values: dict[str, object] = {
        "account_name": "acct",
        "account_url": "http://127.0.0.1:8080",
        "pool_id": "pool-1",
        "node_id": "node-1",
        "node_is_dedicated": True,
        "job_id": JOB if task_id is not None else None,
        "task_id": task_id,
    }
    values.update(overrides)
    return TaskEnvInputs(**values)  # type: ignore[arg-type]


def _spec(
    root: Path,
    command_line: str,
    *,
    task_id: str = "t1",
    max_wall_clock: float | None = None,
    **env_kw: object,
) -> RunSpec:
    layout = NodeLayout(root)
    layout.ensure()
    env = layout.task_env(_inputs(task_id, **env_kw))
    return RunSpec(
        command_line=command_line,
        env=env,
        task_dir=layout.task_dir(JOB, task_id),
        working_dir=layout.working_dir(JOB, task_id),
        max_wall_clock=max_wall_clock,
        kill_grace=1.0,
    )


def _run(spec: RunSpec) -> RunResult:
    async def go() -> RunResult:
        proc = await TaskProcess.start(spec)
        return await asyncio.wait_for(proc.wait(), 20)

    return asyncio.run(go())


def _stdout(spec: RunSpec) -> str:
    return (spec.task_dir / "stdout.txt").read_text()


def _alive(pid: int) -> bool:
    """A zombie counts as dead: pid 1 in a container may never reap re-parented children."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


async def _await_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _read_pids(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(word) for word in text.split()] if text.endswith("\n") else []


# --- runner ------------------------------------------------------------------------------------------------


def test_exit_zero_captures_stdout_and_creates_empty_stderr(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "echo hello world")
    result = _run(spec)
    assert result.exit_code == 0
    assert result.failure is None
    assert not result.timed_out and not result.killed
    assert result.started_at <= result.ended_at
    assert _stdout(spec) == "hello world\n"
    assert (spec.task_dir / "stderr.txt").read_text() == ""
    assert spec.working_dir.is_dir()


def test_stderr_is_captured_separately(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/bin/sh -c 'echo out; echo err >&2'")
    result = _run(spec)
    assert result.exit_code == 0
    assert _stdout(spec) == "out\n"
    assert (spec.task_dir / "stderr.txt").read_text() == "err\n"


def test_nonzero_exit_reports_failure_exit_code(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, "/bin/sh -c 'exit 3'"))
    assert result.exit_code == 3
    assert result.failure is not None
    assert result.failure.category == "usererror"
    assert result.failure.code == "FailureExitCode"
    assert result.failure.message == "The task exited with an exit code representing a failure"
    assert not result.timed_out and not result.killed


def test_exit_by_signal_is_128_plus_signal(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, "/bin/sh -c 'kill -KILL $$'"))
    assert result.exit_code == 137
    assert result.failure is not None and result.failure.code == "FailureExitCode"


def test_command_line_is_not_run_under_a_shell(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "echo $HOME")
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == "$HOME\n"


def test_shell_invoked_explicitly_expands_task_variables(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/bin/sh -c 'echo $AZ_BATCH_TASK_ID'", task_id="task-42")
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == "task-42\n"


def test_quoting_keeps_words_together(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """/bin/sh -c 'echo "a  b"'""")
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == "a  b\n"


def test_working_directory_is_the_task_working_dir(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "pwd")
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == f"{spec.working_dir}\n"


def test_stdin_is_empty(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "cat")
    result = _run(spec)
    assert result.exit_code == 0
    assert _stdout(spec) == ""


def test_missing_program_is_command_program_not_found(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "no-such-program-xyz --flag")
    result = _run(spec)
    assert result.exit_code is None
    assert result.failure is not None
    assert result.failure.category == "usererror"
    assert result.failure.code == "CommandProgramNotFound"
    assert result.failure.message == "The specified command program is not found."
    assert (spec.task_dir / "stdout.txt").exists() and (spec.task_dir / "stderr.txt").exists()


def test_missing_absolute_program_is_command_program_not_found(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, "/nonexistent/bin/tool"))
    assert result.failure is not None and result.failure.code == "CommandProgramNotFound"


def test_non_executable_program_is_command_launch_failed(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "./data.txt")
    spec.working_dir.mkdir(parents=True, exist_ok=True)
    (spec.working_dir / "data.txt").write_text("not a program\n")
    result = _run(spec)
    assert result.exit_code is None
    assert result.failure is not None
    assert result.failure.code == "CommandLaunchFailed"
    assert result.failure.category == "usererror"


def test_unbalanced_quotes_are_command_launch_failed(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, "/bin/sh -c 'echo"))
    assert result.failure is not None and result.failure.code == "CommandLaunchFailed"


def test_program_in_working_dir_found_by_relative_path(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "./hello.sh")
    spec.working_dir.mkdir(parents=True, exist_ok=True)
    script = spec.working_dir / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script\n")
    script.chmod(0o755)
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == "from-script\n"


def test_wall_clock_ends_the_whole_process_group(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, "/bin/sh -c 'sleep 30 & echo $! > pids; echo $$ >> pids; sleep 30'", max_wall_clock=0.5
    )
    began = time.monotonic()
    result = _run(spec)
    elapsed = time.monotonic() - began
    assert elapsed < 5.0
    assert result.timed_out and not result.killed
    assert result.failure is not None
    assert result.failure.code == "TaskEnded"
    assert result.failure.category == "servererror"
    assert result.exit_code == 143  # 128 + SIGTERM
    pids = _read_pids(spec.working_dir / "pids")
    assert len(pids) == 2
    assert _wait_until(lambda: not any(_alive(pid) for pid in pids)), "a process of the task survived"


def test_wall_clock_sigkills_a_task_ignoring_sigterm(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """/bin/sh -c 'trap "" TERM; echo $$ > pids; sleep 30'""", max_wall_clock=0.2)
    began = time.monotonic()
    result = _run(spec)
    assert time.monotonic() - began < 5.0
    assert result.timed_out
    assert result.exit_code == 137  # 128 + SIGKILL
    assert _wait_until(lambda: not any(_alive(pid) for pid in _read_pids(spec.working_dir / "pids")))


def test_task_finishing_within_wall_clock_is_not_timed_out(tmp_path: Path) -> None:
    result = _run(_spec(tmp_path, "true", max_wall_clock=30.0))
    assert result.exit_code == 0 and not result.timed_out and result.failure is None


def test_kill_ends_a_running_task(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/bin/sh -c 'sleep 30 & echo $! > pids; echo $$ >> pids; sleep 30'")
    pid_file = spec.working_dir / "pids"

    async def go() -> tuple[RunResult, list[int], float]:
        proc = await TaskProcess.start(spec)
        assert proc.pid is not None
        await _await_until(lambda: len(_read_pids(pid_file)) == 2)
        began = time.monotonic()
        await asyncio.wait_for(proc.kill("terminated by user"), 10)
        elapsed = time.monotonic() - began
        return await proc.wait(), _read_pids(pid_file), elapsed

    result, pids, elapsed = asyncio.run(go())
    assert elapsed < 5.0
    assert result.killed and not result.timed_out
    assert result.exit_code == 143
    assert result.failure is not None
    assert result.failure.code == "TaskEnded" and result.failure.category == "usererror"
    assert _wait_until(lambda: not any(_alive(pid) for pid in pids))


def test_kill_after_exit_is_harmless(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "true")

    async def go() -> RunResult:
        proc = await TaskProcess.start(spec)
        result = await proc.wait()
        await proc.kill("late")
        return result

    result = asyncio.run(go())
    assert result.exit_code == 0 and not result.killed


def test_cancelling_a_waiter_does_not_stop_the_task(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/bin/sh -c 'sleep 0.2; echo done'")

    async def go() -> RunResult:
        proc = await TaskProcess.start(spec)
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        return await asyncio.wait_for(proc.wait(), 10)

    result = asyncio.run(go())
    assert result.exit_code == 0
    assert _stdout(spec) == "done\n"


def test_many_short_tasks_run_concurrently(tmp_path: Path) -> None:
    async def go() -> list[RunResult]:
        procs = [await TaskProcess.start(_spec(tmp_path, "true", task_id=f"t{i}")) for i in range(50)]
        return await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 30)

    results = asyncio.run(go())
    assert [r.exit_code for r in results] == [0] * 50


def test_stdout_is_truncated_for_a_new_attempt(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "echo second")
    spec.task_dir.mkdir(parents=True, exist_ok=True)
    (spec.task_dir / "stdout.txt").write_text("first attempt with a longer line\n")
    assert _run(spec).exit_code == 0
    assert _stdout(spec) == "second\n"


# --- environment -------------------------------------------------------------------------------------------


def test_task_environment_reaches_the_process(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        "env",
        common_environment=(("COMMON", "from-job"), ("SHARED", "job")),
        environment=(("SHARED", "task"),),
    )
    assert _run(spec).exit_code == 0
    seen = dict(line.split("=", 1) for line in _stdout(spec).splitlines() if "=" in line)
    layout = NodeLayout(tmp_path)
    assert seen["AZ_BATCH_TASK_ID"] == "t1"
    assert seen["AZ_BATCH_JOB_ID"] == JOB
    assert seen["AZ_BATCH_TASK_WORKING_DIR"] == str(layout.working_dir(JOB, "t1"))
    assert seen["COMMON"] == "from-job"
    assert seen["SHARED"] == "task"
    assert seen["HOME"] == str(layout.working_dir(JOB, "t1"))


def test_task_env_values(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SECRET": "agent-only", "HOME": "/root"}
    env = layout.task_env(
        _inputs(
            "t1",
            node_is_dedicated=False,
            task_user="batchuser",
            reserved_disk_space_bytes=1000000,
            job_prep_task_id="jobpreparation",
        ),
        base_env=base,
    )
    task_dir = tmp_path / "workitems" / JOB / "job-1" / "t1"
    expected = {
        "AZ_BATCH_ACCOUNT_NAME": "acct",
        "AZ_BATCH_ACCOUNT_URL": "http://127.0.0.1:8080",
        "AZ_BATCH_POOL_ID": "pool-1",
        "AZ_BATCH_NODE_ID": "node-1",
        "AZ_BATCH_NODE_IS_DEDICATED": "false",
        "AZ_BATCH_NODE_ROOT_DIR": str(tmp_path),
        "AZ_BATCH_NODE_SHARED_DIR": str(tmp_path / "shared"),
        "AZ_BATCH_NODE_STARTUP_DIR": str(tmp_path / "startup"),
        "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(tmp_path / "startup" / "wd"),
        "AZ_BATCH_NODE_MOUNTS_DIR": str(tmp_path / "fsmounts"),
        "AZ_BATCH_JOB_ID": JOB,
        "AZ_BATCH_TASK_ID": "t1",
        "AZ_BATCH_TASK_DIR": str(task_dir),
        "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
        "AZ_BATCH_CERTIFICATES_DIR": str(task_dir / "certs"),
        "AZ_BATCH_TASK_USER": "batchuser",
        "AZ_BATCH_TASK_USER_IDENTITY": "PoolNonAdmin",
        "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES": "1000000",
        "AZ_BATCH_JOB_PREP_DIR": str(tmp_path / "workitems" / JOB / "job-1" / "jobpreparation"),
        "AZ_BATCH_JOB_PREP_WORKING_DIR": str(
            tmp_path / "workitems" / JOB / "job-1" / "jobpreparation" / "wd"
        ),
        "LANG": "C.UTF-8",
        "HOME": str(task_dir / "wd"),
        "PATH": f"/usr/bin:/bin:{tmp_path / 'shared'}:{task_dir / 'wd'}",
    }
    assert env == expected
    assert "SECRET" not in env


def test_user_settings_override_common_ones_but_not_batch_variables(tmp_path: Path) -> None:
    env = NodeLayout(tmp_path).task_env(
        _inputs(
            "t1",
            common_environment=(("A", "common"), ("B", "common"), ("PATH", "/opt/common")),
            environment=(("B", "task"), ("AZ_BATCH_TASK_ID", "spoofed"), ("PATH", "/opt/task")),
        ),
        base_env={"PATH": "/bin"},
    )
    assert env["A"] == "common"
    assert env["B"] == "task"
    assert env["PATH"] == "/opt/task"
    assert env["AZ_BATCH_TASK_ID"] == "t1"


def test_start_task_environment_has_no_job_or_task_id(tmp_path: Path) -> None:
    env = NodeLayout(tmp_path).task_env(_inputs(None), base_env={})
    assert "AZ_BATCH_JOB_ID" not in env and "AZ_BATCH_TASK_ID" not in env
    assert env["AZ_BATCH_TASK_DIR"] == str(tmp_path / "startup")
    assert env["AZ_BATCH_TASK_WORKING_DIR"] == str(tmp_path / "startup" / "wd")
    assert env["PATH"].startswith("/usr/local/sbin:")


def test_job_preparation_task_does_not_see_its_own_prep_dirs(tmp_path: Path) -> None:
    env = NodeLayout(tmp_path).task_env(
        _inputs("jobpreparation", job_prep_task_id="jobpreparation"), base_env={}
    )
    assert "AZ_BATCH_JOB_PREP_DIR" not in env
    assert "AZ_BATCH_JOB_PREP_WORKING_DIR" not in env


def test_default_task_user_is_the_agent_user(tmp_path: Path) -> None:
    env = NodeLayout(tmp_path).task_env(_inputs("t1"), base_env={})
    assert env["AZ_BATCH_TASK_USER"] == pwd.getpwuid(os.getuid()).pw_name


def test_user_identity_labels() -> None:
    assert user_identity_label() == "PoolNonAdmin"
    assert user_identity_label("pool", "admin") == "PoolAdmin"
    assert user_identity_label("task", "nonadmin") == "TaskNonAdmin"
    assert user_identity_label("Task", "Admin") == "TaskAdmin"


# --- layout ------------------------------------------------------------------------------------------------


def test_layout_paths(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path)
    assert layout.shared_dir == tmp_path / "shared"
    assert layout.startup_dir == tmp_path / "startup"
    assert layout.startup_working_dir == tmp_path / "startup" / "wd"
    assert layout.applications_dir == tmp_path / "applications"
    assert layout.mounts_dir == tmp_path / "fsmounts"
    assert layout.workitems_dir == tmp_path / "workitems"
    assert layout.task_dir("j", "t") == tmp_path / "workitems" / "j" / "job-1" / "t"
    assert layout.working_dir("j", "t") == tmp_path / "workitems" / "j" / "job-1" / "t" / "wd"


def test_layout_ensure_creates_node_directories(tmp_path: Path) -> None:
    layout = NodeLayout(tmp_path / "node")
    layout.ensure()
    layout.ensure()  # idempotent
    for path in (
        layout.shared_dir,
        layout.startup_dir,
        layout.applications_dir,
        layout.workitems_dir,
        layout.mounts_dir,
    ):
        assert path.is_dir()


def test_layout_root_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert NodeLayout(Path("rel")).root == tmp_path / "rel"
