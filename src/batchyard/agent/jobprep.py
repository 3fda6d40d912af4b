"""Job Preparation and Job Release tasks on a node (the server side is service.jobprep).

A task attempt of a job with a preparation task carries the preparation's spec. The first such attempt on this
node runs the preparation (in ``workitems/<job>/job-1/<prep id>``, retried up to its ``maxTaskRetryCount`` on a
non-zero exit, never after a resource-file failure); attempts arriving meanwhile wait for it (they are reported
``preparing``) when ``waitForSuccess`` is set, and start at once otherwise. A preparation that failed for good
with ``waitForSuccess`` hands every waiting attempt back (``prepfailed``): no task of the job runs here.

Preparation runs once per agent lifetime: a restarted agent (a node reboot) runs it again, except when
``rerunOnNodeRebootAfterSuccess`` is false and it succeeded before, which a marker in the node root's internal
``.batchyard-jobprep`` directory remembers (a reimage that wipes the node root forgets it, as the service does).

Release work arrives in the sync reply's ``release`` list; it runs once per job, in the background (no slot),
bounded by its ``maxWallClockTime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from batchyard.agent.runner import RunResult, RunSpec, TaskProcess
from batchyard.agent.spawner import Spawner
from batchyard.agent.staging import NodeStaging
from batchyard.models import identity

log = logging.getLogger("batchyard.agent.jobprep")

MARKER_DIR = ".batchyard-jobprep"
#: Jobs remembered per agent lifetime (preparations and releases): beyond this the oldest finished are dropped
#: (a later task of such a job runs its preparation again, as after a reboot).
MAX_JOBS = 10_000


class AgentSide(Protocol):
    """What the runner needs of the agent (agent.main.Agent)."""

    files: NodeStaging

    def _prepare(self, work: dict[str, Any]) -> tuple[RunSpec, identity.TaskUser | None]: ...

    def _spawner_for(self, user: identity.TaskUser) -> Spawner | None: ...

    def _event(self, **ev: Any) -> None: ...


def _iso(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


class JobTaskRunner:
    def __init__(self, agent: AgentSide, root: Path) -> None:
        self.agent = agent
        self.markers = Path(root) / MARKER_DIR
        self.preps: dict[str, asyncio.Future[bool]] = {}  # job key -> outcome of this lifetime's run
        self.releases: set[str] = set()  # job keys whose release was started here
        self.running: dict[str, asyncio.Future[Any]] = {}  # job key -> its release, while it runs

    # --- preparation ------------------------------------------------------------------------------------------

    def gates(self, work: dict[str, Any]) -> bool:
        """Whether the attempt must wait for its job's preparation (which this starts if it has not run)."""
        prep = work.get("jobPreparation")
        if not prep:
            return False
        fut = self._prep_future(prep)
        if not prep.get("waitForSuccess", True):
            return False
        return not (fut.done() and fut.result())

    async def ready(self, work: dict[str, Any], waiting: Callable[[], None]) -> bool:
        """Wait for the preparation; False: it failed for good and the attempt must not run here."""
        prep = work["jobPreparation"]
        fut = self._prep_future(prep)
        if not fut.done():
            waiting()
        return await asyncio.shield(fut)

    def _prep_future(self, prep: dict[str, Any]) -> asyncio.Future[bool]:
        key = str(prep["ref"])
        fut = self.preps.get(key)
        if fut is None:
            if not prep.get("rerunOnNodeRebootAfterSuccess", True) and self._marker(key).exists():
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(True)
            else:
                fut = asyncio.ensure_future(self._run_prep(prep))
            self.preps[key] = fut
            if len(self.preps) > MAX_JOBS:
                done = [k for k, f in self.preps.items() if f.done()][: len(self.preps) - MAX_JOBS]
                for k in done:
                    del self.preps[k]
        return fut

    def _marker(self, key: str) -> Path:
        return self.markers / key.replace("/", "_")

    async def _run_prep(self, prep: dict[str, Any]) -> bool:
        work = dict(prep, jobPrepTaskId=prep["taskId"])
        retries = 0
        last_retry: str | None = None
        limit = int(prep.get("maxTaskRetryCount", 0))
        while True:
            started = _iso(datetime.now(UTC))
            ev: dict[str, Any] = {"type": "jobprep", "ref": prep["ref"], "retryCount": retries}
            if last_retry:
                ev["lastRetryTime"] = last_retry
            self.agent._event(**ev, state="running", startTime=started)
            result, staging_failed = await self._run(work)
            done = dict(ev, state="completed", startTime=started, endTime=_iso(result.ended_at))
            self.agent._event(**done, **_outcome(result))
            if result.exit_code == 0 and result.failure is None:
                with contextlib.suppress(OSError):
                    self.markers.mkdir(mode=0o700, exist_ok=True)
                    self._marker(str(prep["ref"])).touch()
                return True
            if staging_failed or (limit != -1 and retries >= limit):
                return False
            retries += 1
            last_retry = _iso(datetime.now(UTC))

    async def _run(self, work: dict[str, Any]) -> tuple[RunResult, bool]:
        """One attempt: (its result, whether it failed staging its resource files)."""
        from batchyard.agent.node import user_not_found

        spec, user = self.agent._prepare(work)
        if user is None:
            name = str((work.get("userIdentity") or {}).get("username"))
            return await TaskProcess.failed(spec, user_not_found(name)).wait(), True
        failure = await self.agent.files.download(spec, work)
        if failure is not None:
            return await TaskProcess.failed(spec, failure).wait(), True
        proc = await TaskProcess.start(spec, self.agent._spawner_for(user))
        return await proc.wait(), False

    # --- release ----------------------------------------------------------------------------------------------------

    def release(self, work: dict[str, Any]) -> None:
        """Start a job's release task once; the running event goes with the agent's next request."""
        key = str(work["ref"])
        if key in self.releases:
            return
        if len(self.releases) >= MAX_JOBS:
            self.releases.clear()  # the server stops sending a release once it ran: old keys are not needed
        self.releases.add(key)
        started = _iso(datetime.now(UTC))
        self.agent._event(type="jobrelease", ref=key, state="running", startTime=started)
        fut = asyncio.ensure_future(self._run_release(work, started))
        self.running[key] = fut
        fut.add_done_callback(lambda _: self.running.pop(key, None))

    def running_releases(self) -> list[str]:
        """The releases running here, as the sync's running list names them (`<job key>@release`)."""
        return [k + "@release" for k in self.running]

    async def _run_release(self, work: dict[str, Any], started: str) -> None:
        try:
            result, _ = await self._run(work)
        except Exception:  # report it: the job must not wait forever
            log.exception("job release task failed to run")
            now = _iso(datetime.now(UTC))
            failure = {"category": "servererror", "code": "TaskFailed", "message": "The task could not run"}
            ev = {"state": "completed", "startTime": started, "endTime": now, "failureInfo": failure}
            self.agent._event(type="jobrelease", ref=work["ref"], **ev)
            return
        self.agent._event(
            type="jobrelease",
            ref=work["ref"],
            state="completed",
            startTime=started,
            endTime=_iso(result.ended_at),
            **_outcome(result),
        )


def _outcome(result: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": result.exit_code}
    if result.failure is not None:
        f = result.failure
        out["failureInfo"] = {"category": f.category, "code": f.code, "message": f.message}
        if f.details:
            out["failureInfo"]["details"] = [{"name": n, "value": v} for n, v in f.details]
    return out
