"""Auto pools through the official SDK (azure-batch 15.1.0): `poolInfo.autoPoolSpecification` on jobs and job
schedules. Rules: reference semantics/node-lifecycle.md §9, the recorded job GET of an auto-pool job."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.batch.models import _models as private_models  # noqa: E402
from azure.core.exceptions import ResourceNotFoundError

from tests.support.batch import IMAGE, SKU, wait_tasks_done
from tests.support.live import LiveServer, wait_for
from tests.support.raw import IMAGE as RAW_IMAGE
from tests.support.raw import SKU as RAW_SKU
from tests.support.raw import Raw, assert_error

_TERM = private_models.BatchJobTerminateOptions(termination_reason="done")
GUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"


def spec(nodes: int = 1, prefix: str | None = "ap", keep: bool | None = None, lifetime: str = "job") -> Any:
    return m.BatchAutoPoolSpecification(
        auto_pool_id_prefix=prefix,
        pool_lifetime_option=lifetime,
        keep_alive=keep,
        pool=m.BatchPoolSpecification(
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=nodes,
        ),
    )


def pool_gone(client: BatchClient, pool_id: str) -> bool | None:
    try:
        client.get_pool(pool_id)
    except ResourceNotFoundError:
        return True
    return None


def test_job_with_auto_pool_runs_tasks_and_its_pool_goes_when_the_job_ends(
    client: BatchClient, uid: str
) -> None:
    job_id = f"apjob-{uid}"
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id,
            pool_info=m.BatchPoolInfo(auto_pool_specification=spec()),
        )
    )
    job = client.get_job(job_id)
    pool_id = job.execution_info.pool_id
    assert re.fullmatch(rf"ap_{GUID}", pool_id), pool_id
    # poolInfo keeps the specification, with the defaults the service materialises (recorded)
    assert job.pool_info.pool_id is None
    auto = job.pool_info.auto_pool_specification
    assert (
        auto.keep_alive is False and auto.pool_lifetime_option == "job" and auto.auto_pool_id_prefix == "ap"
    )
    assert auto.pool.task_slots_per_node == 1 and auto.pool.resize_timeout == timedelta(minutes=15)
    assert auto.pool.target_dedicated_nodes == 1 and auto.pool.enable_auto_scale is False
    pool = client.get_pool(pool_id)
    assert pool.vm_size == "standard_d2s_v3" and pool.target_dedicated_nodes == 1
    client.create_tasks(
        job_id, [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/true") for i in range(3)]
    )
    tasks = wait_tasks_done(client, job_id, 3, timeout=90)
    assert all(t.execution_info.result == "success" for t in tasks)
    assert all(t.node_info.pool_id == pool_id for t in tasks)
    client.update_job(job_id, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job(job_id).state == "completed" or None, 30, 0.1, "job completed")
    wait_for(lambda: pool_gone(client, pool_id), 30, 0.2, "auto pool deleted")


def test_no_prefix_is_just_the_guid_and_deleting_the_job_deletes_the_pool(
    client: BatchClient, uid: str
) -> None:
    job_id = f"apdel-{uid}"
    client.create_job(
        m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(auto_pool_specification=spec(0, None)))
    )
    pool_id = client.get_job(job_id).execution_info.pool_id
    assert re.fullmatch(GUID, pool_id), pool_id
    assert client.get_pool(pool_id).state == "active"
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    wait_for(lambda: pool_gone(client, pool_id), 30, 0.2, "auto pool deleted with its job")


def test_keep_alive_pool_survives_its_job(client: BatchClient, uid: str) -> None:
    job_id = f"apkeep-{uid}"
    client.create_job(
        m.BatchJobCreateOptions(
            id=job_id, pool_info=m.BatchPoolInfo(auto_pool_specification=spec(0, keep=True))
        )
    )
    pool_id = client.get_job(job_id).execution_info.pool_id
    client.begin_terminate_job(job_id, _TERM, polling_interval=0.2).result()  # type: ignore[arg-type]
    wait_for(lambda: client.get_job(job_id).state == "completed" or None, 30, 0.1, "job completed")
    # a few housekeeping passes later the pool is still there: the user deletes it
    deadline_marker = f"keep-{uid}"
    client.create_job(
        m.BatchJobCreateOptions(
            id=deadline_marker, pool_info=m.BatchPoolInfo(auto_pool_specification=spec(0))
        )
    )
    other = client.get_job(deadline_marker).execution_info.pool_id
    client.begin_terminate_job(deadline_marker, _TERM, polling_interval=0.2).result()  # type: ignore[arg-type]
    wait_for(lambda: pool_gone(client, other), 30, 0.2, "the other auto pool deleted")
    assert client.get_pool(pool_id).state == "active"
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_job_schedule_pool_lifetimes(client: BatchClient, uid: str) -> None:
    """`job`: a new pool per job of the schedule; `jobschedule`: one pool for the schedule's life."""
    for lifetime in ("job", "jobschedule"):
        sid = f"aps-{lifetime}-{uid}"
        client.create_job_schedule(
            m.BatchJobScheduleCreateOptions(
                id=sid,
                schedule=m.BatchJobScheduleConfiguration(recurrence_interval=timedelta(minutes=1)),
                job_specification=m.BatchJobSpecification(
                    pool_info=m.BatchPoolInfo(auto_pool_specification=spec(0, "sched", lifetime=lifetime))
                ),
            )
        )
        recent = wait_for(
            lambda sid=sid: client.get_job_schedule(sid).execution_info.recent_job, 30, 0.1, "first job"
        )
        job = client.get_job(recent.id)
        pool_id = job.execution_info.pool_id
        assert re.fullmatch(rf"sched_{GUID}", pool_id)
        assert client.get_pool(pool_id).state == "active"
        got = client.get_job_schedule(sid).job_specification.pool_info.auto_pool_specification
        assert got.pool_lifetime_option == lifetime and got.pool.task_slots_per_node == 1
        client.begin_terminate_job(recent.id, _TERM, polling_interval=0.2).result()  # type: ignore[arg-type]
        if lifetime == "job":
            wait_for(lambda pool_id=pool_id: pool_gone(client, pool_id), 30, 0.2, "per-job pool deleted")
        else:
            wait_for(
                lambda rid=recent.id: client.get_job(rid).state == "completed" or None, 30, 0.1, "job done"
            )
            assert client.get_pool(pool_id).state == "active"  # lives as long as the schedule
            client.begin_terminate_job_schedule(sid, polling_interval=0.2).result()
            wait_for(lambda pool_id=pool_id: pool_gone(client, pool_id), 30, 0.2, "schedule pool deleted")
        client.begin_delete_job_schedule(sid, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


def _auto(pool: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": {"imageReference": dict(RAW_IMAGE), "nodeAgentSKUId": RAW_SKU},
    }
    body.update(pool or {})
    return {"poolLifetimeOption": "job", "pool": body, **extra}


@pytest.mark.parametrize(
    ("auto", "status", "code", "prop"),
    [
        (
            _auto({"taskSlotsPerNode": 0}),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.pool.taskSlotsPerNode",
        ),
        (
            _auto({"resizeTimeout": "PT1M"}),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.pool.resizeTimeout",
        ),
        (
            _auto({"targetDedicatedNodes": -1}),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.pool.targetDedicatedNodes",
        ),
        (
            _auto({"taskSchedulingPolicy": {"nodeFillType": "diagonal"}}),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.pool.taskSchedulingPolicy.nodeFillType",
        ),
        (
            _auto(autoPoolIdPrefix="x" * 21),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.autoPoolIdPrefix",
        ),
        (
            _auto(autoPoolIdPrefix="bad prefix"),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.autoPoolIdPrefix",
        ),
        (
            _auto(poolLifetimeOption="jobschedule"),
            400,
            "InvalidPropertyValue",
            "poolInfo.autoPoolSpecification.poolLifetimeOption",
        ),
        (
            {"poolLifetimeOption": "job"},
            400,
            "MissingRequiredProperty",
            "",
        ),
        (
            _auto({"enableAutoScale": True}),
            400,
            "MissingRequiredProperty",
            "poolInfo.autoPoolSpecification.pool.autoScaleFormula",
        ),
    ],
)
def test_bad_auto_pool_specifications(
    raw: Raw, uid: str, auto: dict[str, Any], status: int, code: str, prop: str
) -> None:
    r = raw.post("/jobs", {"id": f"bad-{uid}", "poolInfo": {"autoPoolSpecification": auto}})
    if prop:
        assert_error(r, status, code, PropertyName=prop)
    else:
        assert_error(r, status, code)
    assert raw.get(f"/jobs/bad-{uid}").status_code == 404  # nothing created


def test_auto_pool_and_pool_id_together_are_refused(raw: Raw, uid: str) -> None:
    r = raw.post(
        "/jobs", {"id": f"both-{uid}", "poolInfo": {"poolId": "p", "autoPoolSpecification": _auto()}}
    )
    assert_error(r, 400, "InvalidPropertyValue", PropertyName="poolInfo.poolId")


def test_schedule_auto_pool_errors_name_the_job_specification(raw: Raw, uid: str) -> None:
    r = raw.post(
        "/jobschedules",
        {
            "id": f"bads-{uid}",
            "schedule": {},
            "jobSpecification": {"poolInfo": {"autoPoolSpecification": _auto({"taskSlotsPerNode": 999})}},
        },
    )
    assert_error(
        r,
        400,
        "InvalidPropertyValue",
        PropertyName="jobSpecification.poolInfo.autoPoolSpecification.pool.taskSlotsPerNode",
    )


def test_auto_pool_mount_credentials_are_never_returned(raw: Raw, uid: str) -> None:
    blob = {
        "azureBlobFileSystemConfiguration": {
            "accountName": "acct",
            "containerName": "data",
            "accountKey": "c2VjcmV0",
            "relativeMountPath": "blob",
        }
    }
    job_id = f"apmnt-{uid}"
    r = raw.post(
        "/jobs", {"id": job_id, "poolInfo": {"autoPoolSpecification": _auto({"mountConfiguration": [blob]})}}
    )
    assert r.status_code == 201, r.text()
    job = raw.json(f"/jobs/{job_id}")
    got = job["poolInfo"]["autoPoolSpecification"]["pool"]["mountConfiguration"][0][
        "azureBlobFileSystemConfiguration"
    ]
    assert got == {"accountName": "acct", "containerName": "data", "relativeMountPath": "blob"}
    pool = raw.json(f"/pools/{job['executionInfo']['poolId']}")
    assert pool["mountConfiguration"] == [{"azureBlobFileSystemConfiguration": got}]
    assert raw.delete(f"/jobs/{job_id}").status_code == 202


def test_bad_autoscale_formula_completes_the_job_with_a_scheduling_error(
    client: BatchClient, uid: str
) -> None:
    """As recorded for auto pool creation failures: the create succeeds, the job is completed at once with
    executionInfo.schedulingError and no terminateReason, and no pool exists."""
    job_id = f"apfx-{uid}"
    auto = spec(0)
    auto.pool.target_dedicated_nodes = None
    auto.pool.enable_auto_scale = True
    auto.pool.auto_scale_formula = "$TargetDedicatedNodes = ;"
    client.create_job(
        m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(auto_pool_specification=auto))
    )
    job = client.get_job(job_id)
    assert job.state == "completed" and job.execution_info is not None
    err = job.execution_info.scheduling_error
    assert (
        err is not None and err.code == "InvalidAutoScaleFormulaInAutoPool" and err.category == "UserError"
    )  # as recorded
    assert job.execution_info.termination_reason is None and job.execution_info.end_time is not None
    assert pool_gone(client, job.execution_info.pool_id)
    assert job.pool_info.auto_pool_specification.pool.auto_scale_formula == "$TargetDedicatedNodes = ;"
    client.begin_delete_job(job_id, polling_interval=0.2).result()
