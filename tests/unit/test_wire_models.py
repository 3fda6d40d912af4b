"""The generated wire structs and the body decoder, against bodies the real clients send."""

from __future__ import annotations

import datetime
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import azure.batch.models as sdk
import azure.batch.models._models as sdk_models
import msgspec
import pytest
from azure.batch._utils.model_base import Model as SdkModel
from azure.batch._utils.model_base import SdkJSONEncoder, _RestField

from batchyard.models import wire
from batchyard.models.decode import (
    INFINITE_DURATION,
    INFINITE_DURATION_TEXT,
    decode_body,
    format_duration,
    format_time,
    normalise_enums,
    parse_duration,
    parse_time,
    to_wire,
    validate_body,
    validate_durations,
    validate_enums,
)
from batchyard.models.errors import BatchError

ROOT = Path(__file__).resolve().parents[2]
S = typing.TypeVar("S", bound=msgspec.Struct)
UTC = datetime.UTC


def sdk_body(model: SdkModel) -> bytes:
    """Exactly what azure-batch 15.1.0 sends (its operations serialize bodies this way)."""
    return json.dumps(model, cls=SdkJSONEncoder, exclude_readonly=True).encode()


def error_of(data: bytes, model: type[msgspec.Struct], **kw: Any) -> BatchError:
    with pytest.raises(BatchError) as info:
        decode_body(data, model, **kw)
    return info.value


def details(err: BatchError) -> dict[str, str]:
    return dict(err.values)


# --- the generated module -----------------------------------------------------------------------------------


def test_generated_file_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "wire.py"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_wire_models.py"), "--output", str(out)],
        check=True,
        cwd=ROOT,
    )
    current = (ROOT / "src" / "batchyard" / "models" / "wire.py").read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8") == current, "wire.py is stale: run scripts/gen_wire_models.py"


def _sdk_classes() -> list[type[SdkModel]]:
    return [
        c
        for _, c in inspect.getmembers(sdk_models, inspect.isclass)
        if issubclass(c, SdkModel) and c is not SdkModel and c.__module__ == sdk_models.__name__
    ]


def _struct_wire_names(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.encode_name: f for f in msgspec.structs.fields(cls)}


@pytest.mark.parametrize("cls", _sdk_classes(), ids=lambda c: c.__name__)
def test_every_sdk_model_has_a_matching_struct(cls: type[SdkModel]) -> None:
    struct = getattr(wire, cls.__name__)
    assert issubclass(struct, wire.WireModel)
    cfg = struct.__struct_config__
    assert cfg.forbid_unknown_fields and cfg.omit_defaults
    fields = _struct_wire_names(struct)
    legacy = {w for s, w, _ in wire.OLDER_VERSION_FIELDS if s == cls.__name__}
    hints = typing.get_type_hints(cls, globalns=vars(sdk_models) | {"_models": sdk})
    rest = {attr: rf for attr, rf in vars(cls).items() if isinstance(rf, _RestField)}
    assert set(fields) - legacy == {rf._rest_name_input or attr for attr, rf in rest.items()}
    for attr, rf in rest.items():
        f = fields[rf._rest_name_input or attr]
        assert f.name == attr
        sdk_required = type(None) not in typing.get_args(hints[attr]) and rf._visibility != ["read"]
        assert f.required == sdk_required, f"{cls.__name__}.{attr}"
    for w in legacy:
        assert not fields[w].required


def test_tables_refer_to_real_fields() -> None:
    for (struct, field), enum_name in wire.FIELD_ENUMS.items():
        assert field in _struct_wire_names(getattr(wire, struct))
        assert enum_name in wire.ENUMS
    for struct, field in wire.DURATION_FIELDS:
        assert field in _struct_wire_names(getattr(wire, struct))
    for struct, field, _ in wire.OLDER_VERSION_FIELDS:
        assert field in _struct_wire_names(getattr(wire, struct))
    for values in wire.ENUMS.values():
        assert all(v == v.lower() for v in values)
    assert wire.ENUMS["BatchNodeFillType"] == frozenset({"spread", "pack"})
    assert wire.ENUM_CANONICAL["ContainerWorkingDirectory"]["taskworkingdirectory"] == "taskWorkingDirectory"
    assert wire.FIELD_ENUMS[("BatchTaskSchedulingPolicy", "nodeFillType")] == "BatchNodeFillType"
    assert ("BatchPoolCreateOptions", "resizeTimeout") in wire.DURATION_FIELDS
    assert ("FileProperties", "contentLength") in wire.STRING_ENCODED_INT_FIELDS


def test_request_body_tables() -> None:
    expected = {
        "create_pool": wire.BatchPoolCreateOptions,
        "update_pool": wire.BatchPoolUpdateOptions,
        "replace_pool_properties": wire.BatchPoolReplaceOptions,
        "resize_pool": wire.BatchPoolResizeOptions,
        "remove_nodes": wire.BatchNodeRemoveOptions,
        "enable_pool_auto_scale": wire.BatchPoolEnableAutoScaleOptions,
        "evaluate_pool_auto_scale": wire.BatchPoolEvaluateAutoScaleOptions,
        "create_job": wire.BatchJobCreateOptions,
        "update_job": wire.BatchJobUpdateOptions,
        "replace_job": wire.BatchJob,
        "disable_job": wire.BatchJobDisableOptions,
        "terminate_job": wire.BatchJobTerminateOptions,
        "create_job_schedule": wire.BatchJobScheduleCreateOptions,
        "update_job_schedule": wire.BatchJobScheduleUpdateOptions,
        "replace_job_schedule": wire.BatchJobSchedule,
        "create_task": wire.BatchTaskCreateOptions,
        "create_task_collection": wire.BatchTaskGroup,
        "replace_task": wire.BatchTask,
        "create_node_user": wire.BatchNodeUserCreateOptions,
        "replace_node_user": wire.BatchNodeUserReplaceOptions,
        "reboot_node": wire.BatchNodeRebootOptions,
        "reimage_node": wire.BatchNodeReimageOptions,
        "deallocate_node": wire.BatchNodeDeallocateOptions,
        "disable_node_scheduling": wire.BatchNodeDisableSchedulingOptions,
        "upload_node_logs": wire.UploadBatchServiceLogsOptions,
    }
    assert wire.REQUEST_BODIES == expected
    assert wire.REQUEST_BODY_ROUTES[("POST", "/pools/{poolId}/resize")] is wire.BatchPoolResizeOptions
    assert wire.REQUEST_BODY_ROUTES[("PUT", "/jobs/{jobId}/tasks/{taskId}")] is wire.BatchTask
    assert wire.REQUEST_BODY_ROUTES[("POST", "/jobs/{jobId}/addtaskcollection")] is wire.BatchTaskGroup


# --- real SDK bodies ----------------------------------------------------------------------------------------


def _start_task() -> sdk.BatchStartTask:
    return sdk.BatchStartTask(
        command_line="/bin/sh -c 'echo hi'",
        container_settings=sdk.BatchTaskContainerSettings(
            image_name="ubuntu:22.04",
            container_run_options="--rm",
            working_directory=sdk.ContainerWorkingDirectory.TASK_WORKING_DIRECTORY,
        ),
        resource_files=[sdk.ResourceFile(http_url="https://example.invalid/in.txt", file_path="in.txt")],
        environment_settings=[sdk.EnvironmentSetting(name="FOO", value="bar")],
        user_identity=sdk.UserIdentity(
            auto_user=sdk.AutoUserSpecification(
                scope=sdk.AutoUserScope.POOL, elevation_level=sdk.ElevationLevel.ADMIN
            )
        ),
        max_task_retry_count=2,
        wait_for_success=True,
    )


def _pool_spec_kwargs() -> dict[str, Any]:
    return dict(
        vm_size="standard_d2_v2",
        virtual_machine_configuration=sdk.VirtualMachineConfiguration(
            image_reference=sdk.BatchVmImageReference(
                publisher="Canonical", offer="0001-com-ubuntu-server-jammy", sku="22_04-lts", version="latest"
            ),
            node_agent_sku_id="batch.node.ubuntu 22.04",
            data_disks=[sdk.DataDisk(logical_unit_number=0, disk_size_gb=64)],
        ),
        resize_timeout=datetime.timedelta(minutes=15),
        target_dedicated_nodes=1,
        target_low_priority_nodes=0,
        enable_inter_node_communication=False,
        start_task=_start_task(),
        task_slots_per_node=2,
        task_scheduling_policy=sdk.BatchTaskSchedulingPolicy(node_fill_type=sdk.BatchNodeFillType.PACK),
        user_accounts=[
            sdk.UserAccount(
                name="u1",
                password="pw",
                elevation_level=sdk.ElevationLevel.NON_ADMIN,
                linux_user_configuration=sdk.LinuxUserConfiguration(uid=1000, gid=1000),
            )
        ],
        metadata=[sdk.BatchMetadataItem(name="k", value="v")],
        application_package_references=[
            sdk.BatchApplicationPackageReference(application_id="app", version="1")
        ],
    )


def _check_round_trip(model: SdkModel, struct: type[S]) -> S:
    body = sdk_body(model)
    obj = decode_body(body, struct)
    validate_body(obj)
    assert to_wire(obj) == json.loads(body)
    return obj


def test_sdk_pool_create_body() -> None:
    pool = sdk.BatchPoolCreateOptions(id="pool1", display_name="Pool one", **_pool_spec_kwargs())
    obj = _check_round_trip(pool, wire.BatchPoolCreateOptions)
    assert isinstance(obj, wire.BatchPoolCreateOptions)
    assert obj.resize_timeout == "PT15M00S"  # the SDK itself pads durations
    assert parse_duration(obj.resize_timeout) == datetime.timedelta(minutes=15)
    assert isinstance(obj.start_task, wire.BatchStartTask)
    assert obj.start_task.wait_for_success is True
    assert isinstance(obj.virtual_machine_configuration, wire.VirtualMachineConfiguration)
    assert obj.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 22.04"


def test_sdk_pool_create_probe_body() -> None:
    """The exact create_pool body logged from azure-batch 15.1.0 (rest_api.md §3.4)."""
    body = (
        b'{"id": "pool1", "vmSize": "standard_d2_v2", "virtualMachineConfiguration": {"imageReference": '
        b'{"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts", "version": '
        b'"latest"}, "nodeAgentSKUId": "batch.node.ubuntu 22.04"}, "targetDedicatedNodes": 1, "startTask": '
        b'{"commandLine": "/bin/sh -c \'echo hi\'", "waitForSuccess": true, "userIdentity": {"autoUser": '
        b'{"scope": "pool", "elevationLevel": "admin"}}}}'
    )
    obj = decode_body(body, wire.BatchPoolCreateOptions)
    assert obj.target_dedicated_nodes == 1
    assert to_wire(obj) == json.loads(body)


def test_sdk_job_create_body() -> None:
    job = sdk.BatchJobCreateOptions(
        id="job1",
        display_name="Job one",
        uses_task_dependencies=True,
        priority=100,
        allow_task_preemption=False,
        max_parallel_tasks=-1,
        constraints=sdk.BatchJobConstraints(
            max_wall_clock_time=datetime.timedelta(hours=1), max_task_retry_count=3
        ),
        job_manager_task=sdk.BatchJobManagerTask(
            id="jm", command_line="echo jm", kill_job_on_completion=True, run_exclusive=False
        ),
        job_preparation_task=sdk.BatchJobPreparationTask(command_line="echo prep", wait_for_success=True),
        job_release_task=sdk.BatchJobReleaseTask(
            command_line="echo release", max_wall_clock_time=datetime.timedelta(minutes=10)
        ),
        common_environment_settings=[sdk.EnvironmentSetting(name="A", value="1")],
        pool_info=sdk.BatchPoolInfo(
            auto_pool_specification=sdk.BatchAutoPoolSpecification(
                auto_pool_id_prefix="auto",
                pool_lifetime_option=sdk.BatchPoolLifetimeOption.JOB,
                keep_alive=False,
                pool=sdk.BatchPoolSpecification(**_pool_spec_kwargs()),
            )
        ),
        all_tasks_complete_mode=sdk.BatchAllTasksCompleteMode.TERMINATE_JOB,
        task_failure_mode=sdk.BatchTaskFailureMode.PERFORM_EXIT_OPTIONS_JOB_ACTION,
        metadata=[sdk.BatchMetadataItem(name="k", value="v")],
    )
    obj = _check_round_trip(job, wire.BatchJobCreateOptions)
    assert isinstance(obj.constraints, wire.BatchJobConstraints)
    assert isinstance(obj.constraints.max_wall_clock_time, str)
    assert parse_duration(obj.constraints.max_wall_clock_time) == datetime.timedelta(hours=1)
    assert obj.all_tasks_complete_mode == "terminatejob"


def test_sdk_task_create_body() -> None:
    task = sdk.BatchTaskCreateOptions(
        id="task1",
        display_name="Task one",
        command_line="/bin/sh -c 'echo hello'",
        exit_conditions=sdk.ExitConditions(
            exit_codes=[
                sdk.ExitCodeMapping(
                    code=3, exit_options=sdk.ExitOptions(job_action=sdk.BatchJobActionKind.DISABLE)
                )
            ],
            exit_code_ranges=[
                sdk.ExitCodeRangeMapping(
                    start=4, end=8, exit_options=sdk.ExitOptions(dependency_action=sdk.DependencyAction.BLOCK)
                )
            ],
            default=sdk.ExitOptions(job_action=sdk.BatchJobActionKind.NONE),
        ),
        resource_files=[sdk.ResourceFile(http_url="https://example.invalid/in.txt", file_path="in.txt")],
        output_files=[
            sdk.OutputFile(
                file_pattern="**/*.txt",
                destination=sdk.OutputFileDestination(
                    container=sdk.OutputFileBlobContainerDestination(
                        container_url="https://x.invalid/c", path="out"
                    )
                ),
                upload_options=sdk.OutputFileUploadConfiguration(
                    upload_condition=sdk.OutputFileUploadCondition.TASK_COMPLETION
                ),
            )
        ],
        environment_settings=[sdk.EnvironmentSetting(name="FOO", value="bar")],
        affinity_info=sdk.BatchAffinityInfo(affinity_id="TVM:node1"),
        constraints=sdk.BatchTaskConstraints(
            max_wall_clock_time=datetime.timedelta(hours=1),
            retention_time=datetime.timedelta(days=7),
            max_task_retry_count=2,
        ),
        required_slots=1,
        user_identity=sdk.UserIdentity(username="u1"),
        depends_on=sdk.BatchTaskDependencies(
            task_ids=["a", "b"], task_id_ranges=[sdk.BatchTaskIdRange(start=1, end=10)]
        ),
        application_package_references=[sdk.BatchApplicationPackageReference(application_id="app")],
    )
    obj = _check_round_trip(task, wire.BatchTaskCreateOptions)
    assert isinstance(obj.exit_conditions, wire.ExitConditions)
    assert isinstance(obj.exit_conditions.default, wire.ExitOptions)
    assert obj.exit_conditions.default.job_action == "none"
    assert isinstance(obj.depends_on, wire.BatchTaskDependencies)
    assert obj.depends_on.task_ids == ["a", "b"]


def test_sdk_task_collection_body() -> None:
    tasks = [
        sdk.BatchTaskCreateOptions(id="t0", command_line="echo hi"),
        sdk.BatchTaskCreateOptions(
            id="t1",
            command_line="echo hi",
            depends_on=sdk.BatchTaskDependencies(task_ids=["t0"]),
            multi_instance_settings=sdk.MultiInstanceSettings(
                number_of_instances=2, coordination_command_line="echo coord"
            ),
        ),
        sdk.BatchTaskCreateOptions(id="t2", command_line="echo hi"),
    ]
    obj = _check_round_trip(sdk.BatchTaskGroup(task_values=tasks), wire.BatchTaskGroup)
    assert [t.id for t in obj.task_values] == ["t0", "t1", "t2"]


def test_sdk_job_schedule_and_node_user_bodies_with_datetimes() -> None:
    when = datetime.datetime(2025, 3, 19, 18, 25, 36, 999971, tzinfo=UTC)
    schedule = sdk.BatchJobScheduleCreateOptions(
        id="sched1",
        schedule=sdk.BatchJobScheduleConfiguration(
            do_not_run_until=when,
            start_window=datetime.timedelta(minutes=5),
            recurrence_interval=datetime.timedelta(days=1),
        ),
        job_specification=sdk.BatchJobSpecification(
            pool_info=sdk.BatchPoolInfo(pool_id="pool1"), priority=5, display_name="spec"
        ),
    )
    obj = decode_body(sdk_body(schedule), wire.BatchJobScheduleCreateOptions)
    validate_body(obj)
    assert isinstance(obj.schedule, wire.BatchJobScheduleConfiguration)
    assert obj.schedule.do_not_run_until == when
    assert to_wire(obj)["schedule"]["doNotRunUntil"] == "2025-03-19T18:25:36.9999710Z"

    user = sdk.BatchNodeUserCreateOptions(name="u", is_admin=True, expiry_time=when, password="pw")
    uobj = decode_body(sdk_body(user), wire.BatchNodeUserCreateOptions)
    assert uobj.expiry_time == when
    assert uobj.is_admin is True


@pytest.mark.parametrize(
    ("model", "struct"),
    [
        (
            sdk.BatchPoolUpdateOptions(metadata=[], start_task=sdk.BatchStartTask(command_line="x")),
            "BatchPoolUpdateOptions",
        ),
        (
            sdk.BatchPoolReplaceOptions(
                application_package_references=[], metadata=[sdk.BatchMetadataItem(name="a", value="b")]
            ),
            "BatchPoolReplaceOptions",
        ),
        (
            sdk.BatchPoolResizeOptions(
                target_dedicated_nodes=2,
                resize_timeout=datetime.timedelta(minutes=5),
                node_deallocation_option=sdk.BatchNodeDeallocationOption.TASK_COMPLETION,
            ),
            "BatchPoolResizeOptions",
        ),
        (sdk.BatchNodeRemoveOptions(node_ids=["n1", "n2"]), "BatchNodeRemoveOptions"),
        (
            sdk.BatchPoolEnableAutoScaleOptions(
                auto_scale_formula="$TargetDedicatedNodes=1;",
                auto_scale_evaluation_interval=datetime.timedelta(minutes=5),
            ),
            "BatchPoolEnableAutoScaleOptions",
        ),
        (
            sdk.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$x=1;"),
            "BatchPoolEvaluateAutoScaleOptions",
        ),
        (sdk.BatchJobUpdateOptions(priority=100, max_parallel_tasks=2), "BatchJobUpdateOptions"),
        (
            sdk.BatchJobDisableOptions(disable_tasks=sdk.DisableBatchJobOption.REQUEUE),
            "BatchJobDisableOptions",
        ),
        (sdk_models.BatchJobTerminateOptions(termination_reason="done"), "BatchJobTerminateOptions"),
        (
            sdk.BatchNodeUserReplaceOptions(password="pw", ssh_public_key="ssh-rsa AAA"),
            "BatchNodeUserReplaceOptions",
        ),
        (
            sdk_models.BatchNodeRebootOptions(node_reboot_kind="taskcompletion"),
            "BatchNodeRebootOptions",
        ),
        (
            sdk_models.BatchNodeReimageOptions(node_reimage_option="retaineddata"),
            "BatchNodeReimageOptions",
        ),
        (
            sdk.BatchNodeDisableSchedulingOptions(
                node_disable_scheduling_option=sdk.BatchNodeDisableSchedulingOption.TERMINATE
            ),
            "BatchNodeDisableSchedulingOptions",
        ),
        (
            sdk.BatchJobScheduleUpdateOptions(metadata=[sdk.BatchMetadataItem(name="a", value="b")]),
            "BatchJobScheduleUpdateOptions",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_sdk_small_bodies(model: SdkModel, struct: str) -> None:
    _check_round_trip(model, getattr(wire, struct))


def test_replace_bodies_from_get_modify_put() -> None:
    """replace_job/replace_task/replace_job_schedule send the fetched model back, odata.metadata included."""
    job = sdk.BatchJob(
        {
            "odata.metadata": "https://acct.invalid/$metadata#jobs/@Element",
            "id": "job1",
            "url": "https://acct.invalid/jobs/job1",
            "eTag": "0x1",
            "state": "active",
            "creationTime": "2025-01-01T00:00:00.0000000Z",
            "priority": 0,
            "poolInfo": {"poolId": "pool1"},
            "constraints": {"maxWallClockTime": INFINITE_DURATION_TEXT, "maxTaskRetryCount": 0},
            "onAllTasksComplete": "noaction",
        }
    )
    job.priority = 5
    body = sdk_body(job)
    assert b'"odata.metadata"' in body
    obj = decode_body(body, wire.BatchJob)
    assert obj.priority == 5
    assert obj.id is msgspec.UNSET  # read-only, not sent
    assert isinstance(obj.pool_info, wire.BatchPoolInfo) and obj.pool_info.pool_id == "pool1"
    assert isinstance(obj.constraints, wire.BatchJobConstraints)
    assert isinstance(obj.constraints.max_wall_clock_time, str)
    assert parse_duration(obj.constraints.max_wall_clock_time) == INFINITE_DURATION

    task = sdk.BatchTask(constraints=sdk.BatchTaskConstraints(max_task_retry_count=3))
    tobj = decode_body(sdk_body(task), wire.BatchTask)
    assert isinstance(tobj.constraints, wire.BatchTaskConstraints)
    assert tobj.constraints.max_task_retry_count == 3

    schedule = sdk.BatchJobSchedule(
        job_specification=sdk.BatchJobSpecification(pool_info=sdk.BatchPoolInfo(pool_id="p"))
    )
    assert isinstance(
        decode_body(sdk_body(schedule), wire.BatchJobSchedule).job_specification, wire.BatchJobSpecification
    )


# --- az and older-client quirks -----------------------------------------------------------------------------


def test_az_pool_create_with_string_integer() -> None:
    body = (
        b'{"id":"p1","vmSize":"standard_d2s_v3","virtualMachineConfiguration":{"imageReference":{"publisher":'
        b'"canonical","offer":"0001-com-ubuntu-server-focal","sku":"20_04-lts"},"nodeAgentSKUId":'
        b'"batch.node.ubuntu 20.04"},"targetDedicatedNodes":"1"}'
    )
    obj = decode_body(body, wire.BatchPoolCreateOptions)
    assert obj.target_dedicated_nodes == 1
    assert to_wire(obj)["targetDedicatedNodes"] == 1


@pytest.mark.parametrize(
    ("body", "struct", "attr", "expected"),
    [
        (b'{"targetDedicatedNodes": "2"}', wire.BatchPoolResizeOptions, "target_dedicated_nodes", 2),
        (b'{"priority": "5"}', wire.BatchJobUpdateOptions, "priority", 5),
        (b'{"priority": "-5"}', wire.BatchJobUpdateOptions, "priority", -5),
        (b'{"maxParallelTasks": "2"}', wire.BatchJobUpdateOptions, "max_parallel_tasks", 2),
        (b'{"resizeTimeout": "PT15M00S"}', wire.BatchPoolResizeOptions, "resize_timeout", "PT15M00S"),
        (b'{"isAdmin": "true", "name": "u"}', wire.BatchNodeUserCreateOptions, "is_admin", True),
    ],
)
def test_az_string_scalars(body: bytes, struct: type[msgspec.Struct], attr: str, expected: object) -> None:
    obj = decode_body(body, struct)
    validate_body(obj)
    assert getattr(obj, attr) == expected


def test_az_task_reset_body() -> None:
    obj = decode_body(b'{"constraints":{"maxTaskRetryCount":"3"}}', wire.BatchTask)
    assert isinstance(obj.constraints, wire.BatchTaskConstraints)
    assert obj.constraints.max_task_retry_count == 3


def test_az_pool_reset_body_with_certificate_references() -> None:
    body = (
        b'{"applicationPackageReferences":[],"metadata":[],"certificateReferences":[],'
        b'"startTask":{"commandLine":"echo hi","maxTaskRetryCount":"2","waitForSuccess":true}}'
    )
    obj = decode_body(body, wire.BatchPoolReplaceOptions)
    assert obj.certificate_references == []
    assert obj.application_package_references == [] and obj.metadata == []


def test_legacy_14_2_pool_body() -> None:
    body = {
        "id": "p",
        "vmSize": "small",
        "cloudServiceConfiguration": {"osFamily": "6", "osVersion": "*"},
        "targetNodeCommunicationMode": "Simplified",
        "resourceTags": {"team": "a"},
        "applicationLicenses": ["maya"],
        "certificateReferences": [
            {
                "thumbprint": "abc",
                "thumbprintAlgorithm": "sha1",
                "storeLocation": "LocalMachine",
                "visibility": ["startTask", "task"],
            }
        ],
        "startTask": {"commandLine": "x"},
    }
    obj = decode_body(json.dumps(body).encode(), wire.BatchPoolCreateOptions)
    validate_body(obj)
    normalise_enums(obj)
    assert obj.target_node_communication_mode == "simplified"
    assert isinstance(obj.certificate_references, list)
    assert obj.certificate_references[0].visibility == ["starttask", "task"]
    assert isinstance(obj.cloud_service_configuration, wire.CloudServiceConfiguration)
    assert obj.resource_tags == {"team": "a"}

    job = {
        "id": "j",
        "poolInfo": {
            "autoPoolSpecification": {
                "poolLifetimeOption": "job",
                "pool": {"vmSize": "s", "resourceTags": {}},
            }
        },
        "jobManagerTask": {
            "id": "jm",
            "commandLine": "x",
            "authenticationTokenSettings": {"access": ["job"]},
        },
    }
    decode_body(json.dumps(job).encode(), wire.BatchJobCreateOptions)
    disk = b'{"lun": 0, "diskSizeGB": 10, "storageAccountType": "premium_lrs"}'
    assert decode_body(disk, wire.DataDisk).storage_account_type == "premium_lrs"


def test_nulls_and_bom_are_tolerated() -> None:
    obj = decode_body(
        b'\xef\xbb\xbf{"id": "p", "vmSize": "s", "displayName": null, "startTask": null}',
        wire.BatchPoolCreateOptions,
    )
    assert obj.display_name is msgspec.UNSET and obj.start_task is msgspec.UNSET


def test_optional_bodies_may_be_empty() -> None:
    assert decode_body(b"", wire.BatchNodeRebootOptions, required=False) == wire.BatchNodeRebootOptions()
    assert (
        decode_body(b"  ", wire.BatchJobTerminateOptions, required=False) == wire.BatchJobTerminateOptions()
    )


# --- errors -------------------------------------------------------------------------------------------------


def test_unknown_property_top_level() -> None:
    err = error_of(b'{"id": "p", "vmSize": "s", "bogus": 1}', wire.BatchPoolCreateOptions)
    assert (err.status, err.code) == (400, "UnsupportedProperty")
    assert details(err) == {"PropertyName": "bogus"}


def test_unknown_property_nested() -> None:
    err = error_of(
        b'{"id":"p","vmSize":"s","startTask":{"commandLine":"x","foo":1}}', wire.BatchPoolCreateOptions
    )
    assert (err.status, err.code) == (400, "UnsupportedProperty")
    assert details(err)["PropertyName"] == "startTask.foo"
    err = error_of(
        b'{"value":[{"id":"a","commandLine":"x"},{"id":"b","commandLine":"x","userIdentity":{"autoUser":{"x":1}}}]}',
        wire.BatchTaskGroup,
    )
    assert details(err)["PropertyName"] == "value[1].userIdentity.autoUser.x"


def test_unknown_property_after_null_stripping() -> None:
    err = error_of(
        b'{"id":"p","vmSize":"s","displayName":null,"startTask":{"commandLine":"x","foo":1}}',
        wire.BatchPoolCreateOptions,
    )
    assert err.code == "UnsupportedProperty" and details(err)["PropertyName"] == "startTask.foo"


def test_missing_required_property() -> None:
    err = error_of(b'{"id": "p"}', wire.BatchPoolCreateOptions)
    assert (err.status, err.code) == (400, "MissingRequiredProperty")
    assert details(err) == {"PropertyName": "vmSize"}
    err = error_of(b'{"id": "p", "vmSize": "s", "startTask": {}}', wire.BatchPoolCreateOptions)
    assert details(err)["PropertyName"] == "startTask.commandLine"
    err = error_of(b'{"value": [{"id": "a"}]}', wire.BatchTaskGroup)
    assert details(err)["PropertyName"] == "value[0].commandLine"
    err = error_of(b'{"id": null, "vmSize": "s"}', wire.BatchPoolCreateOptions)
    assert err.code == "MissingRequiredProperty" and details(err)["PropertyName"] == "id"


def test_wrong_type() -> None:
    err = error_of(b'{"targetDedicatedNodes": "lots"}', wire.BatchPoolResizeOptions)
    assert (err.status, err.code) == (400, "InvalidPropertyValue")
    d = details(err)
    assert d["PropertyName"] == "targetDedicatedNodes"
    assert d["PropertyValue"] == "lots"
    assert "int" in d["Reason"]
    err = error_of(
        b'{"id":"t","commandLine":"x","environmentSettings":[{"name":"A","value":5}]}',
        wire.BatchTaskCreateOptions,
    )
    assert details(err)["PropertyName"] == "environmentSettings[0].value"
    assert details(err)["PropertyValue"] == "5"
    err = error_of(b'{"name": "u", "expiryTime": "tomorrow"}', wire.BatchNodeUserCreateOptions)
    assert err.code == "InvalidPropertyValue" and details(err)["PropertyName"] == "expiryTime"
    err = error_of(b'{"targetDedicatedNodes": 99999999999999999999999}', wire.BatchPoolResizeOptions)
    assert err.code == "InvalidPropertyValue"
    err = error_of(b'{"nodeList": "n1"}', wire.BatchNodeRemoveOptions)
    assert err.code == "InvalidPropertyValue" and details(err)["PropertyName"] == "nodeList"


@pytest.mark.parametrize("body", [b"{", b'{"id": "p",', b"not json", b'{"id": "p"} trailing', b"\xff\xfe"])
def test_invalid_json(body: bytes) -> None:
    err = error_of(body, wire.BatchPoolCreateOptions)
    assert (err.status, err.code) == (400, "InvalidRequestBody")


def test_unknown_field_before_syntax_error_is_still_invalid_json() -> None:
    err = error_of(b'{"bogus": 1, "id": ', wire.BatchPoolCreateOptions)
    assert err.code == "InvalidRequestBody"


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"null", b"1"])
def test_body_not_an_object(body: bytes) -> None:
    assert error_of(body, wire.BatchPoolCreateOptions).code == "InvalidRequestBody"


def test_empty_body_where_required() -> None:
    err = error_of(b"", wire.BatchJobCreateOptions)
    assert err.code == "InvalidRequestBody"


def test_body_too_large() -> None:
    err = error_of(b'{"value": []}', wire.BatchTaskGroup, max_bytes=4)
    assert (err.status, err.code) == (413, "RequestBodyTooLarge")


def test_naive_datetimes_become_utc() -> None:
    obj = decode_body(b'{"name": "u", "expiryTime": "2025-01-01T00:00:00"}', wire.BatchNodeUserCreateOptions)
    assert obj.expiry_time == datetime.datetime(2025, 1, 1, tzinfo=UTC)


# --- enums and durations ------------------------------------------------------------------------------------


def test_enum_case_insensitive_and_normalised() -> None:
    body = (
        b'{"id":"p","vmSize":"s","taskSchedulingPolicy":{"nodeFillType":"Spread"},'
        b'"startTask":{"commandLine":"x","userIdentity":{"autoUser":{"scope":"POOL","elevationLevel":"Admin"}},'
        b'"containerSettings":{"imageName":"i","workingDirectory":"TASKWORKINGDIRECTORY"}},'
        b'"virtualMachineConfiguration":{"imageReference":{"publisher":"a"},"nodeAgentSKUId":"n",'
        b'"diskEncryptionConfiguration":{"targets":["OsDisk","TEMPORARYDISK"]}}}'
    )
    obj = decode_body(body, wire.BatchPoolCreateOptions)
    validate_enums(obj)
    assert isinstance(obj.task_scheduling_policy, wire.BatchTaskSchedulingPolicy)
    assert obj.task_scheduling_policy.node_fill_type == "Spread"  # validate_enums does not rewrite
    normalise_enums(obj)
    out = to_wire(obj)
    assert out["taskSchedulingPolicy"]["nodeFillType"] == "spread"
    assert out["startTask"]["userIdentity"]["autoUser"] == {"scope": "pool", "elevationLevel": "admin"}
    assert out["startTask"]["containerSettings"]["workingDirectory"] == "taskWorkingDirectory"
    assert out["virtualMachineConfiguration"]["diskEncryptionConfiguration"]["targets"] == [
        "osdisk",
        "temporarydisk",
    ]


def test_enum_invalid_value() -> None:
    obj = decode_body(b'{"disableTasks": "sometimes"}', wire.BatchJobDisableOptions)
    with pytest.raises(BatchError) as info:
        validate_enums(obj)
    assert info.value.code == "InvalidPropertyValue"
    assert details(info.value)["PropertyName"] == "disableTasks"
    assert details(info.value)["PropertyValue"] == "sometimes"
    obj2 = decode_body(
        b'{"virtualMachineConfiguration":{"imageReference":{},"nodeAgentSKUId":"n",'
        b'"diskEncryptionConfiguration":{"targets":["osdisk","floppy"]}},"vmSize":"s","id":"p"}',
        wire.BatchPoolCreateOptions,
    )
    with pytest.raises(BatchError) as info:
        validate_body(obj2)
    assert (
        details(info.value)["PropertyName"]
        == "virtualMachineConfiguration.diskEncryptionConfiguration.targets[1]"
    )


def test_invalid_duration_is_invalid_property_value() -> None:
    obj = decode_body(b'{"resizeTimeout": "15 minutes"}', wire.BatchPoolResizeOptions)
    with pytest.raises(BatchError) as info:
        validate_durations(obj)
    assert info.value.code == "InvalidPropertyValue"
    assert details(info.value)["PropertyName"] == "resizeTimeout"


@pytest.mark.parametrize(
    ("text", "expected", "formatted"),
    [
        ("PT15M", datetime.timedelta(minutes=15), "PT15M"),
        ("PT15M00S", datetime.timedelta(minutes=15), "PT15M"),
        ("PT01H00M00S", datetime.timedelta(hours=1), "PT1H"),
        ("PT10M00S", datetime.timedelta(minutes=10), "PT10M"),
        ("P1D", datetime.timedelta(days=1), "P1D"),
        ("P7D", datetime.timedelta(days=7), "P7D"),
        ("P0D", datetime.timedelta(0), "PT0S"),
        ("PT0S", datetime.timedelta(0), "PT0S"),
        ("P1DT2H3M4.5S", datetime.timedelta(days=1, hours=2, minutes=3, seconds=4.5), "P1DT2H3M4.5S"),
        ("PT0.0000010S", datetime.timedelta(microseconds=1), "PT0.000001S"),
        ("P1Y", datetime.timedelta(days=365), "P365D"),
        ("P1M", datetime.timedelta(days=30), "P30D"),
        ("P1W", datetime.timedelta(days=7), "P7D"),
        ("pt5m", datetime.timedelta(minutes=5), "PT5M"),
        ("-PT1H", -datetime.timedelta(hours=1), "-PT1H"),
        (INFINITE_DURATION_TEXT, INFINITE_DURATION, INFINITE_DURATION_TEXT),
    ],
)
def test_durations(text: str, expected: datetime.timedelta, formatted: str) -> None:
    assert parse_duration(text) == expected
    assert format_duration(parse_duration(text)) == formatted
    assert parse_duration(format_duration(expected)) == expected


def test_infinite_duration() -> None:
    assert INFINITE_DURATION == datetime.timedelta(
        days=10675199, hours=2, minutes=48, seconds=5, microseconds=477580
    )
    assert format_duration(datetime.timedelta.max) == INFINITE_DURATION_TEXT
    assert format_duration(INFINITE_DURATION) == INFINITE_DURATION_TEXT
    assert format_duration(INFINITE_DURATION - datetime.timedelta(days=1)) != INFINITE_DURATION_TEXT


@pytest.mark.parametrize(
    "text", ["", "P", "PT", "P1DT", "1H", "PT1.5M", "PT-1H", "P1H", "P99999999999D", "forever"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_time_formatting() -> None:
    dt = datetime.datetime(2025, 3, 19, 18, 25, 36, 999971, tzinfo=UTC)
    assert format_time(dt) == "2025-03-19T18:25:36.9999710Z"
    assert format_time(datetime.datetime(2025, 1, 1)) == "2025-01-01T00:00:00.0000000Z"
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    assert format_time(datetime.datetime(2025, 1, 1, 2, tzinfo=plus2)) == "2025-01-01T00:00:00.0000000Z"
    assert format_time(datetime.datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.0000000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-19T18:25:36.9999710Z", datetime.datetime(2025, 3, 19, 18, 25, 36, 999971, tzinfo=UTC)),
        ("2025-03-19T18:25:36Z", datetime.datetime(2025, 3, 19, 18, 25, 36, tzinfo=UTC)),
        ("2025-03-19T18:25:36.5+02:00", datetime.datetime(2025, 3, 19, 16, 25, 36, 500000, tzinfo=UTC)),
        ("2025-03-19T18:25:36", datetime.datetime(2025, 3, 19, 18, 25, 36, tzinfo=UTC)),
        ("2025-03-19", datetime.datetime(2025, 3, 19, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime.datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC
    assert parse_time(format_time(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2025-13-01T00:00:00Z", "2025-03-19T25:00:00Z", "2025-03-19T18"]
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
