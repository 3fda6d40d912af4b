"""One compute node (started by `batchyard.agent.main`). Talks to the server over HTTP only, never to the store.

Two requests may be in flight: a long poll that waits for work, and a short report sent as soon as a
task starts or ends, so completions reach the server without waiting for the poll to return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchyard.agent.apppkg import Packages
from batchyard.agent.jobprep import JobTaskRunner
from batchyard.agent.layout import MPI_SESSIONS_FILE, NodeLayout, TaskEnvInputs
from batchyard.agent.mounts import NodeMounts
from batchyard.agent.runner import (
    TASK_ENDED_BY_USER,
    USER_ERROR,
    FailureInfo,
    RunResult,
    RunSpec,
    TaskProcess,
)
from batchyard.agent.spawner import Spawner
from batchyard.agent.staging import NodeStaging, needs_staging
from batchyard.agent.starttask import NodeInfo, StartTaskRunner
from batchyard.agent.usage import UsageSampler
from batchyard.agent.wire import Client, WireError
from batchyard.models import identity
from batchyard.models.startlog import StartLog

if TYPE_CHECKING:  # loaded by the nodes that need them (decision 0181)
    from batchyard.agent import containers, multiinstance

log = logging.getLogger("batchyard.agent")


def is_instance(work: dict[str, Any]) -> bool:
    """A multi-instance subtask's instance (its ref names one): `multiinstance.is_instance` without the import."""
    if "~" not in str(work.get("ref", "")):  # models.multiinstance.INSTANCE_SEP: never in a job or task id
        return False
    from batchyard.agent import multiinstance

    return multiinstance.is_instance(work)


def multiinstance_leftovers(root: Path) -> bool:
    return (root / MPI_SESSIONS_FILE).exists()


def user_not_found(name: str) -> FailureInfo:
    """A task naming a user account its pool does not have fails before it runs."""
    return FailureInfo(
        USER_ERROR,
        "UserIdentityNotFound",
        f"The task's userIdentity names user account '{name}', which the pool does not have.",
    )


SYNC_PATH = "/batchyard/agent/v1/sync"
#: attempts remembered as finished before the first pruning (those of the last 120 s are always kept)
FINISHED_KEPT = 10_000


def prune_finished(finished: dict[str, float], now: float) -> tuple[dict[str, float], int]:
    """Forget attempts that finished over 120 s ago; the size at which to prune next.

    That size is twice what was kept, so a node finishing thousands of tasks a minute prunes ever more
    rarely instead of on every completion: O(1) per task.
    """
    kept = {r: t for r, t in finished.items() if now - t < 120}
    return kept, max(FINISHED_KEPT, 2 * len(kept))


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text[:26] + "+00:00")


def _iso(dt: datetime) -> str:
    u = dt.astimezone(UTC)  # formatted by hand: strftime was a visible share of the agent's per-task CPU
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}0Z"
    )


@dataclass
class AgentConfig:
    server: str
    node_id: str
    pool_id: str
    token: str
    root: Path
    account: str
    account_url: str = ""
    dedicated: bool = True
    poll_wait: float = 20.0
    orphan_timeout: float = 600.0
    # the longest a busy node holds its reports back to batch them (it stops waiting once its queue runs low)
    coalesce: float = 0.05
    # the pool's userAccounts (without secrets), for tasks that name one
    user_accounts: tuple[dict[str, Any], ...] = ()
    # data staging: the account's linked storage (connection string) and the dirs file:// URLs may name
    auto_storage: str | None = None
    file_roots: tuple[Path, ...] = ()
    # the pool's containerConfiguration as JSON (with registry credentials), decision 0170
    container_config: str | None = None


@dataclass
class Agent:
    cfg: AgentConfig
    running: dict[str, TaskProcess] = field(default_factory=dict)
    queue: list[dict[str, Any]] = field(default_factory=list)  # placed work waiting for a free slot
    queue_low: asyncio.Event | None = None  # set when the queue runs low while reports are held back
    used_slots: int = 0
    node_slots: int = 1
    task_slots: dict[str, int] = field(default_factory=dict)
    # attempts that already ran here: a reply computed before one finished must not start it again
    finished: dict[str, float] = field(default_factory=dict)
    finished_limit: int = FINISHED_KEPT  # or twice what the last pruning kept
    events: list[dict[str, Any]] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)
    seq: int = 0
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    last_contact: float = field(default_factory=time.monotonic)
    # the start-up report of pool application packages, sent with the next sync (None: nothing to send)
    node_errors: list[dict[str, Any]] | None = None

    spawners: dict[tuple[int | None, int | None, tuple[int, ...]], Spawner] = field(default_factory=dict)
    task_serial: int = 0
    starting: set[str] = field(default_factory=set)  # being started through the launcher helper
    # attempts downloading resource files (cancelled by a kill) and their run specs/work for the uploads
    staging: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    staged: dict[str, tuple[RunSpec, dict[str, Any], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = NodeLayout(self.cfg.root)
        self.layout.ensure()
        self.start_log = StartLog(self.cfg.root)  # survives this process: see models.startlog
        self.files = NodeStaging(self.cfg.root, self.cfg.auto_storage, self.cfg.file_roots)
        self.jobtasks = JobTaskRunner(self, self.cfg.root)  # job preparation and release tasks
        self.containers: containers.Engine | None = None
        if self.cfg.container_config:
            from batchyard.agent import containers

            self.containers = containers.Engine.for_pool(
                self.cfg.node_id, self.cfg.root, self.cfg.container_config
            )
        # A privileged server gives each node a uid block, recorded as the node root's group (decision 0010).
        self.base = self.layout.secure() if os.geteuid() == 0 else None
        if self.base is not None:
            os.umask(0o027)
        self._instances: multiinstance.Instances | None = None
        if multiinstance_leftovers(self.cfg.root):  # a killed agent's gang sessions: ended first thing
            _ = self.instances
        self.client = Client(self.cfg.server, timeout=self.cfg.poll_wait + 15)
        # every start of this process is a boot of the node: its start task runs (agent.starttask)
        c = self.cfg
        node = NodeInfo(c.account, c.account_url, c.pool_id, c.node_id, c.dedicated, c.user_accounts)
        self.start_task = StartTaskRunner(
            os.urandom(8).hex(), node, self.layout, self.files, self.base, self._spawner_for, self._event
        )
        self.packages = Packages(
            self.client, self.cfg.node_id, self.cfg.token, self.layout.applications_dir, self.base
        )
        self.usage = UsageSampler(self.cfg.root)  # resource figures for pool statistics (agent.usage)
        self.mounts = NodeMounts(self.cfg.root)  # the pool's mountConfiguration (agent.mounts)

    @property
    def instances(self) -> multiinstance.Instances:
        """Multi-instance work on this node, loaded with the first instance (or a killed agent's leftovers)."""
        if self._instances is None:
            from batchyard.agent import multiinstance

            self._instances = multiinstance.Instances(self, self.cfg.root, self.base)
        return self._instances

    def _event(self, **ev: Any) -> None:
        self.seq += 1
        ev["seq"] = self.seq
        self.events.append(ev)
        self.kick.set()

    async def _sync(self, wait: float) -> bool:
        batch = [e for e in self.events if e["seq"] not in self.in_flight]
        for e in batch:
            self.in_flight.add(e["seq"])
        payload: dict[str, Any] = {
            "nodeId": self.cfg.node_id,
            "pid": os.getpid(),
            "events": batch,
            "running": [
                *self.running,
                *self.starting,
                *(w["ref"] for w in self.queue),
                *(self._instances.refs() if self._instances is not None else ()),
                *self.jobtasks.running_releases(),
            ],
            "wait": wait,
            "boot": self.start_task.boot,
            "needStartTask": self.start_task.needed,
        }
        reported = self.node_errors
        if reported is not None:
            payload["nodeErrors"] = reported
        stats = self.usage.take()
        if stats is not None:
            payload["stats"] = stats
        mounts = self.mounts.report()
        if mounts is not None:
            payload["mounts"] = mounts
        try:
            resp = await self.client.post_json(
                SYNC_PATH,
                payload,
                headers={"x-batchyard-node-token": self.cfg.token, "x-batchyard-node-id": self.cfg.node_id},
            )
        except WireError as exc:
            log.info("server unreachable: %s", exc)
            self.usage.give_back(stats)
            return False
        finally:
            for e in batch:
                self.in_flight.discard(e["seq"])
        if resp.status_code in (401, 403, 404, 409):
            log.error("server rejected this node (%s); stopping", resp.status_code)
            self.stopping = True
            return False
        if resp.status_code != 200:
            log.warning("sync answered %s", resp.status_code)
            return False
        self.last_contact = time.monotonic()
        if reported is not None and self.node_errors is reported:
            self.node_errors = None
        data = resp.json()
        ack = int(data.get("ack", 0))
        acked = {e["seq"] for e in batch if e["seq"] <= ack}
        self.events = [e for e in self.events if e["seq"] not in acked]
        self.mounts.receive(data, lambda: self._sync(0))
        self.start_task.receive(data)
        kill = set(data.get("kill", []))
        if kill:
            self.queue = [w for w in self.queue if w["ref"] not in kill]
        for ref in kill:
            downloading = self.staging.get(ref)
            if downloading is not None:
                downloading.cancel()
            proc = self.running.get(ref)
            if proc is not None:
                asyncio.ensure_future(proc.kill("the server no longer assigns this task"))
            if self._instances is not None:
                asyncio.ensure_future(self._instances.kill(ref))
        queued = {w["ref"] for w in self.queue}
        for work in data.get("run", []):
            ref = work["ref"]
            if (
                ref not in self.running
                and ref not in self.starting
                and ref not in queued
                and ref not in self.finished
            ):
                self.node_slots = max(self.node_slots, int(work.get("nodeSlots", 1)))
                if is_instance(work):
                    self.instances.start(work)
                    continue
                # a multi-instance primary takes no slot (its instance holds it): it never waits in line
                self.queue.insert(0, work) if work.get("mpi") else self.queue.append(work)
                queued.add(work["ref"])
        for work in data.get("release", []):
            self.jobtasks.release(work)
        await self._pump()
        if data.get("stop"):
            self.stopping = True
        return True

    async def _pump(self) -> None:
        """Start queued work, in order, while the node has free slots.

        Slots are taken here, synchronously; a start through a launcher helper then completes on its own, so
        launches are pipelined rather than waiting one helper round trip each.
        """
        while self.queue and int(self.queue[0].get("slots", 1)) <= self.node_slots - self.used_slots:
            work = self.queue.pop(0)
            if self.queue_low is not None and len(self.queue) < self.node_slots:
                self.queue_low.set()  # a held-back report goes now, to refill the queue in time
            ref = work["ref"]
            slots = int(work.get("slots", 1))
            self.task_slots[ref] = slots
            self.used_slots += slots
            self.starting.add(ref)
            spec, user = self._prepare(work)
            if self.jobtasks.gates(work):  # the job's preparation task runs here first
                self.staging[ref] = asyncio.ensure_future(self._start_prepared(ref, spec, user, work))
                continue
            await self._launch(ref, spec, user, work)

    async def _launch(
        self, ref: str, spec: RunSpec, user: identity.TaskUser | None, work: dict[str, Any]
    ) -> None:
        if user is not None and needs_staging(work):
            self.staging[ref] = asyncio.ensure_future(self._start_staged(ref, spec, user, work))
        elif user is not None and user.uid not in (None, 0):
            asyncio.ensure_future(self._start(ref, spec, user))  # pipelined through the helper
        else:  # nothing is awaited inside: starts at once
            missing = str((work.get("userIdentity") or {}).get("username"))
            await self._start(ref, spec, user, missing)

    async def _start_prepared(
        self, ref: str, spec: RunSpec, user: identity.TaskUser | None, work: dict[str, Any]
    ) -> None:
        """Wait for the job's preparation task on this node, then start the attempt or hand it back."""
        try:
            ok = await self.jobtasks.ready(work, lambda: self._event(type="preparing", ref=ref))
        except BaseException:  # killed while waiting: the server no longer assigns it
            self.staging.pop(ref, None)
            self._release(ref)
            raise
        self.staging.pop(ref, None)
        if not ok:  # no task of this job runs on this node
            self._release(ref)
            self.finished[ref] = time.monotonic()
            self._event(type="prepfailed", ref=ref)
            await self._pump()
            return
        await self._launch(ref, spec, user, work)

    def _release(self, ref: str) -> None:
        self.starting.discard(ref)
        self.used_slots -= self.task_slots.pop(ref, 1)

    def _spawner_for(self, user: identity.TaskUser) -> Spawner | None:
        """The launcher helper for ``user``: one per identity, running as that user (decision 0010)."""
        if user.uid in (None, 0):
            return None
        base = self.base
        per_task = base is not None and base + identity.TASK_SCOPE_FIRST <= user.uid < base + identity.BLOCK
        key: tuple[int | None, int | None, tuple[int, ...]] = (
            (None, None, ()) if per_task else (user.uid, user.gid, user.extra_groups)
        )
        sp = self.spawners.get(key)
        if sp is None or not sp.alive:
            sp = Spawner(*key) if not per_task else Spawner()
            self.spawners[key] = sp
        return sp

    def _user(self, work: dict[str, Any]) -> identity.TaskUser | None:
        self.task_serial += 1
        try:
            return identity.resolve(
                work.get("userIdentity"), self.cfg.user_accounts, self.base, self.task_serial
            )
        except identity.UnknownUser:
            return None

    def _prepare(self, work: dict[str, Any]) -> tuple[RunSpec, identity.TaskUser | None]:
        """The attempt's run spec and user (``None``: the task names an account the pool lacks)."""
        job_id, task_id = work["jobId"], work["taskId"]
        task_dir = self.layout.task_dir(job_id, task_id)
        wd = self.layout.working_dir(job_id, task_id)
        user = self._user(work)
        env = self.layout.task_env(
            TaskEnvInputs(
                account_name=self.cfg.account,
                account_url=self.cfg.account_url,
                pool_id=self.cfg.pool_id,
                node_id=self.cfg.node_id,
                node_is_dedicated=self.cfg.dedicated,
                job_id=job_id,
                task_id=task_id,
                common_environment=tuple((k, v) for k, v in work.get("commonEnvironment") or []),
                environment=tuple((k, v) for k, v in work.get("environment") or []),
                task_user=user.name if user is not None else None,
                task_user_identity=user.label if user is not None else "PoolNonAdmin",
                job_prep_task_id=work.get("jobPrepTaskId"),
            )
        )
        env.update(self.packages.pool_env)  # AZ_BATCH_* variables: never overridden by the task's
        if user is not None and user.uid is not None:
            env["USER"] = env["LOGNAME"] = user.name
        spec = RunSpec(
            command_line=work["commandLine"],
            env=env,
            task_dir=task_dir,
            working_dir=wd,
            max_wall_clock=work.get("maxWallClockSeconds"),
            uid=user.uid if user is not None else None,
            gid=user.gid if user is not None else None,
            groups=user.extra_groups if user is not None else (),
            dir_gid=self.base,
            container=self._container(work.get("containerSettings")),
        )
        if work.get("mpi"):
            from batchyard.agent import multiinstance

            spec = multiinstance.decorate(spec, work, self.cfg.root)
        return spec, user

    def _container(self, settings: dict[str, Any] | None) -> containers.ContainerLaunch | None:
        if not settings:  # a host task: the container module stays unloaded
            return None
        from batchyard.agent import containers

        return containers.launch_for(self.containers, settings)

    async def _start(
        self, ref: str, spec: RunSpec, user: identity.TaskUser | None, missing: str = ""
    ) -> None:
        if user is None:
            proc = TaskProcess.failed(spec, user_not_found(missing))
        else:
            try:
                self.start_log.add(ref)
                proc = await TaskProcess.start(spec, self._spawner_for(user))
            except BaseException:
                self._release(ref)
                raise
        self.starting.discard(ref)
        self.running[ref] = proc
        self._event(type="started", ref=ref, time=_iso(datetime.now(UTC)))
        asyncio.ensure_future(self._watch(ref, proc))

    async def _start_staged(
        self, ref: str, spec: RunSpec, user: identity.TaskUser, work: dict[str, Any]
    ) -> None:
        """An attempt with resource or output files: running (started sent) while its files download."""
        started = _iso(datetime.now(UTC))
        self.staged[ref] = (spec, work, started)
        try:
            self.start_log.add(ref)
            self._event(type="started", ref=ref, time=started)
            try:
                failure = None
                refs = work.get("applicationPackageReferences")
                if refs:
                    extra, failure = await self.packages.for_task(refs)
                    if extra:
                        spec = replace(spec, env={**spec.env, **extra})
                        self.staged[ref] = (spec, work, started)
                if failure is None:
                    failure = await self.files.download(spec, work)
            except asyncio.CancelledError:
                failure = TASK_ENDED_BY_USER
                self.staged.pop(ref, None)  # ended by the server: nothing to upload, retried as usual
            self.staging.pop(ref, None)  # a kill from here on ends the process, not the download
            if failure is not None:
                proc = TaskProcess.failed(spec, failure)
            else:
                proc = await TaskProcess.start(spec, self._spawner_for(user))
        except BaseException:
            self.staging.pop(ref, None)
            self.staged.pop(ref, None)
            self._release(ref)
            raise
        self.staging.pop(ref, None)
        self.starting.discard(ref)
        self.running[ref] = proc
        asyncio.ensure_future(self._watch(ref, proc, no_retry=failure is not None and ref in self.staged))

    async def _watch(self, ref: str, proc: TaskProcess, no_retry: bool = False) -> None:
        result: RunResult = await proc.wait()
        staged = self.staged.pop(ref, None)
        failure = result.failure
        if staged is not None:
            spec, work, started = staged
            if not no_retry:
                up = await self.files.upload(spec, work, result.exit_code)
                if up is not None:
                    failure, no_retry = up, True
            result = replace(result, started_at=_parse_iso(started), failure=failure)
        self.running.pop(ref, None)
        self.used_slots -= self.task_slots.pop(ref, 1)
        now = time.monotonic()
        self.finished[ref] = now
        if len(self.finished) > self.finished_limit:
            self.finished, self.finished_limit = prune_finished(self.finished, now)
        ev: dict[str, Any] = {
            "type": "completed",
            "ref": ref,
            "exitCode": result.exit_code,
            "startTime": _iso(result.started_at),
            "endTime": _iso(result.ended_at),
            "timedOut": result.timed_out,
            "usage": {
                "user": result.user_cpu,
                "kernel": result.kernel_cpu,
                "readOps": result.read_ops,
                "writeOps": result.write_ops,
            },
        }
        if proc.spec.container is not None and (info := proc.spec.container.info()):
            ev["containerInfo"] = info
        if result.failure is not None:
            ev["failureInfo"] = {
                "category": result.failure.category,
                "code": result.failure.code,
                "message": result.failure.message,
            }
            if result.failure.details:
                ev["failureInfo"]["details"] = [{"name": n, "value": v} for n, v in result.failure.details]
        if no_retry:
            ev["noRetry"] = True
        self._event(**ev)
        await self._pump()

    async def poll_loop(self) -> None:
        backoff = 0.05
        while not self.stopping:
            ok = await self._sync(self.cfg.poll_wait)
            if ok:
                backoff = 0.05
                continue
            if time.monotonic() - self.last_contact > self.cfg.orphan_timeout:
                log.error("no contact with the server for %.0f s; stopping", self.cfg.orphan_timeout)
                self.stopping = True
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def report_loop(self) -> None:
        while not self.stopping:
            await self.kick.wait()
            # Let events of a burst of short tasks share one request, but only while enough placed work
            # is queued here to keep the slots busy; when the queue runs low, report (and refill) at once.
            if len(self.queue) >= self.node_slots:
                # up to `coalesce` seconds, until the queue falls below one round of slots
                self.queue_low = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue_low.wait(), self.cfg.coalesce)
                self.queue_low = None
            else:
                await asyncio.sleep(0.001)
            self.kick.clear()
            if any(e["seq"] not in self.in_flight for e in self.events):
                await self._sync(0)

    async def shutdown(self) -> None:
        if self.containers is not None:  # at once: the provider kills this agent a few seconds after asking
            with contextlib.suppress(Exception):
                await self.containers.remove_stale()
        await self.start_task.stop()
        if self._instances is not None:
            await self._instances.shutdown()
        for proc in list(self.running.values()):
            with contextlib.suppress(Exception):
                await proc.kill("the node is being removed")
        await self.mounts.close()  # after the tasks that may use them
        await self.client.aclose()
        await self.files.aclose()
        for sp in self.spawners.values():
            sp.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # joining (or rebooted, reimaged: an agent start): the pool's packages before the first sync
        since = time.monotonic()
        joining = asyncio.ensure_future(
            self.packages.join(
                lambda: (
                    stop.is_set() or time.monotonic() - since > self.cfg.orphan_timeout
                )  # the poll loop's rule
            )
        )
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([joining, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not joining.done():
            joining.cancel()
            await self.shutdown()
            return
        self.node_errors = joining.result()
        self.start_task.pool_env = self.packages.pool_env  # a start task sees the pool's packages too
        stopper = asyncio.ensure_future(stop.wait())
        if self.containers is not None:  # images are pulled before the node first reports (it stays starting)
            join = asyncio.ensure_future(self.containers.join(self._event))
            await asyncio.wait([stopper, join], return_when=asyncio.FIRST_COMPLETED)
            join.cancel()
        tasks = [asyncio.ensure_future(self.poll_loop()), asyncio.ensure_future(self.report_loop())]
        tasks.append(asyncio.ensure_future(self.usage.run(lambda: self._sync(0))))
        await asyncio.wait([stopper, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        self.stopping = True
        for t in [*tasks, stopper]:
            t.cancel()
        await self.shutdown()


async def run(cfg: AgentConfig) -> None:
    await Agent(cfg).run()
