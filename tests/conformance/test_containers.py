"""Container tasks through the official azure-batch 15.1.0 SDK against a live server with real agents and a real
container engine (Podman with runc, decision 0170) pulling from a real registry (Debian's docker-registry) that
this module starts on a loopback port, with credentials.

Under ``CI=true`` a missing engine fails these tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.support.batch import IMAGE, SKU, create_pool, wait_idle_nodes, wait_task_state, wait_tasks_done
from tests.support.live import LiveServer, free_port, wait_for
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools
from tests.support.semantics import new_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LOCAL_IMAGE = "localhost/batchyard-test:1"
USER, PASSWORD = "byuser", "correct horse battery"


def _engine_or_fail() -> None:
    missing = [t for t in ("podman", "runc", "docker-registry") if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"container engine missing ({', '.join(missing)})" if missing else "container tasks need root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: run scripts/container-deps")
        pytest.skip(why)


class Registry:
    def __init__(self, host: str, proc: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.proc = proc

    def image(self, name: str) -> str:
        return f"{self.host}/batchyard/{name}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with basic auth on a loopback port, serving the test image as ``batchyard/test:1``."""
    _engine_or_fail()
    subprocess.run([str(REPO / "scripts" / "container-deps")], check=True)
    d = tmp_path_factory.mktemp("registry")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt, the only scheme the registry's htpasswd takes (Python 3.11's libxcrypt)

        (d / "htpasswd").write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    host = f"127.0.0.1:{free_port()}"
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: {host}\n  secret: batchyard-test\n"
        f"auth:\n  htpasswd:\n    realm: batchyard\n    path: {d / 'htpasswd'}\n"
    )
    log = open(d / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=log, stderr=log)
    reg = Registry(host, proc)
    try:

        def push(target: str) -> bool | None:
            cmd = ["podman", "push", "--quiet", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}"]
            return subprocess.run([*cmd, LOCAL_IMAGE, target], capture_output=True).returncode == 0 or None

        for target in (reg.image("test:1"), reg.image("test:2")):
            wait_for(lambda target=target: push(target), 30, 0.2, f"{target} pushed to the registry")
            # the nodes must pull it themselves: drop the copy the push left under the registry's name
            subprocess.run(["podman", "rmi", "--force", target], capture_output=True)
        yield reg
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        # containers of agents killed with their test server (a killed agent cannot clean up after itself)
        left = subprocess.run(
            ["podman", "ps", "-aq", "--filter", "label=batchyard.node"], capture_output=True, text=True
        ).stdout.split()
        if left:
            subprocess.run(["podman", "rm", "-f", "--time", "0", *left], capture_output=True)


def container_pool(reg: Registry, password: str = PASSWORD) -> dict[str, object]:
    return {
        "virtual_machine_configuration": m.VirtualMachineConfiguration(
            image_reference=IMAGE,
            node_agent_sku_id=SKU,
            container_configuration=m.BatchContainerConfiguration(
                type="dockerCompatible",
                container_image_names=[reg.image("test:1")],
                container_registries=[
                    m.ContainerRegistryReference(registry_server=reg.host, username=USER, password=password)
                ],
            ),
        )
    }


@pytest.fixture(scope="module")
def pool(client: BatchClient, registry: Registry) -> Iterator[str]:
    pool_id = f"ctr-{uuid.uuid4().hex[:8]}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            task_slots_per_node=4,
            **container_pool(registry),  # type: ignore[arg-type]
        )
    )
    wait_idle_nodes(client, pool_id, 1, timeout=120)
    yield pool_id
    with contextlib.suppress(ResourceNotFoundError):  # the bad-input tests' fixture may have deleted it
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def containers_of(node_id: str) -> list[str]:
    out = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"label=batchyard.node={node_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def ctask(task_id: str, script: str, image: str, **kw: object) -> m.BatchTaskCreateOptions:
    settings = kw.pop("settings", {})
    return m.BatchTaskCreateOptions(
        id=task_id,
        command_line=f"/bin/sh -c '{script}'",
        container_settings=m.BatchTaskContainerSettings(image_name=image, **settings),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def read(client: BatchClient, job_id: str, task_id: str, path: str) -> str:
    return b"".join(client.download_task_file(job_id, task_id, path)).decode()


def test_task_runs_in_the_image_as_the_task_user(
    client: BatchClient, pool: str, registry: Registry, uid: str
) -> None:
    job_id = f"ctr-{uid}"
    new_job(client, job_id, pool)
    script = (
        "cat /etc/os-release; echo uid=$(id -u); echo pwd=$(pwd); echo task=$AZ_BATCH_TASK_ID; echo var=$MY_VAR;"
        " echo wd=$AZ_BATCH_TASK_WORKING_DIR; echo from-container > $AZ_BATCH_TASK_WORKING_DIR/out.txt;"
        " echo to-stderr >&2; exit 3"
    )
    client.create_task(
        job_id,
        ctask(
            "t1",
            script,
            registry.image("test:1"),
            environment_settings=[m.EnvironmentSetting(name="MY_VAR", value="hello world")],
        ),
    )
    (t,) = wait_tasks_done(client, job_id, 1, timeout=60)
    assert t.container_settings.working_directory == "taskWorkingDirectory"
    assert t.execution_info.exit_code == 3, t.execution_info
    assert t.execution_info.failure_info.code == "FailureExitCode"
    info = t.execution_info.container_info
    assert info.state == "exited" and len(info.container_id) == 64, info
    out = read(client, job_id, "t1", "stdout.txt")
    assert "ID=batchyard-test" in out and "debian" not in out.lower(), out
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["uid"] != "0"  # the task's own user, not root
    assert lines["pwd"] == lines["wd"] and lines["wd"].endswith(f"/{t.id}/wd")
    assert lines["task"] == "t1" and lines["var"] == "hello world"
    assert read(client, job_id, "t1", "wd/out.txt") == "from-container\n"
    assert read(client, job_id, "t1", "stderr.txt") == "to-stderr\n"  # nothing of the engine's own
    (node,) = client.list_nodes(pool)
    wait_for(lambda: not containers_of(node.id) or None, 15, 0.1, "the container removed")


def test_image_default_workdir_and_no_bind_mounts(
    client: BatchClient, pool: str, registry: Registry, uid: str
) -> None:
    job_id = f"ctrwd-{uid}"
    new_job(client, job_id, pool)
    script = "pwd; test -e $AZ_BATCH_NODE_ROOT_DIR && echo root-visible || echo root-hidden; echo $PATH"
    settings = {"working_directory": "containerImageDefault", "container_host_batch_bind_mounts": []}
    client.create_task(job_id, ctask("t", script, registry.image("test:1"), settings=settings))
    ro = {
        "container_host_batch_bind_mounts": [
            m.ContainerHostBatchBindMountEntry(source="Task", is_read_only=True)
        ]
    }
    client.create_task(
        job_id, ctask("ro", "touch $AZ_BATCH_TASK_WORKING_DIR/x", registry.image("test:1"), settings=ro)
    )
    # a variable the agent does not set here cannot point a bind mount outside the node's directory
    escape = {"container_host_batch_bind_mounts": [m.ContainerHostBatchBindMountEntry(source="JobPrep")]}
    client.create_task(
        job_id,
        ctask(
            "escape",
            "test -e /etc/debian_version && echo host-etc || echo image-etc",
            registry.image("test:1"),
            settings=escape,
            environment_settings=[m.EnvironmentSetting(name="AZ_BATCH_JOB_PREP_DIR", value="/etc")],
        ),
    )
    tasks = {t.id: t for t in wait_tasks_done(client, job_id, 3, timeout=60)}
    assert read(client, job_id, "escape", "stdout.txt") == "image-etc\n", (
        tasks["escape"].execution_info,
        read(client, job_id, "escape", "stderr.txt"),
    )
    assert tasks["t"].execution_info.exit_code == 0
    assert read(client, job_id, "t", "stdout.txt") == "/\nroot-hidden\n/bin\n"
    assert tasks["ro"].execution_info.exit_code == 1  # the task dir is there, read-only
    assert "Read-only file system" in read(client, job_id, "ro", "stderr.txt")


def test_wall_clock_and_terminate_kill_the_container(
    client: BatchClient, pool: str, registry: Registry, uid: str
) -> None:
    job_id = f"ctrkill-{uid}"
    new_job(client, job_id, pool)
    image = registry.image("test:1")
    limit = m.BatchTaskConstraints(max_wall_clock_time=dt.timedelta(seconds=1))
    client.create_task(job_id, ctask("wall", "sleep 300", image, constraints=limit))
    client.create_task(job_id, ctask("term", "sleep 300", image))
    wait_task_state(client, job_id, "term", "running")
    (node,) = client.list_nodes(pool)
    wait_for(lambda: len(containers_of(node.id)) == 1 or None, 20, 0.1, "the container started")
    client.terminate_task(job_id, "term")
    # a variable the agent does not set here cannot point a bind mount outside the node's directory
    escape = {"container_host_batch_bind_mounts": [m.ContainerHostBatchBindMountEntry(source="JobPrep")]}
    client.create_task(
        job_id,
        ctask(
            "escape",
            "test -e /etc/debian_version && echo host-etc || echo image-etc",
            registry.image("test:1"),
            settings=escape,
            environment_settings=[m.EnvironmentSetting(name="AZ_BATCH_JOB_PREP_DIR", value="/etc")],
        ),
    )
    tasks = {t.id: t for t in wait_tasks_done(client, job_id, 3, timeout=60)}
    assert read(client, job_id, "escape", "stdout.txt") == "image-etc\n", (
        tasks["escape"].execution_info,
        read(client, job_id, "escape", "stderr.txt"),
    )
    assert tasks["wall"].execution_info.failure_info.code == "TaskEnded"
    assert tasks["wall"].execution_info.failure_info.category == "servererror"
    assert tasks["term"].execution_info.failure_info.code == "TaskEnded"
    assert (
        tasks["wall"].execution_info.exit_code == 137
    )  # sleep as PID 1 ignores SIGTERM: SIGKILL after the grace
    wait_for(lambda: not containers_of(node.id) or None, 20, 0.1, "no container left on the node")


def test_missing_image_fails_the_task(client: BatchClient, pool: str, registry: Registry, uid: str) -> None:
    job_id = f"ctrmiss-{uid}"
    new_job(client, job_id, pool)
    client.create_task(job_id, ctask("t", "true", registry.image("missing:1")))
    client.create_task(job_id, ctask("local", "true", "localhost/batchyard-no-such:1"))
    # the task's own registry credentials win over the pool's for its registry (test:2 is not prefetched)
    wrong = m.ContainerRegistryReference(registry_server=registry.host, username=USER, password="wrong")
    client.create_task(job_id, ctask("creds", "true", registry.image("test:2"), settings={"registry": wrong}))
    images = (registry.image("missing:1"), "localhost/batchyard-no-such:1", registry.image("test:2"))
    for t in wait_tasks_done(client, job_id, 3, timeout=60):
        info = t.execution_info
        assert info.result == "failure" and info.exit_code is None, info
        assert (info.failure_info.category, info.failure_info.code) == ("usererror", "ContainerInvalidImage")
        details = {d.name: d.value for d in info.failure_info.details}
        assert details["ContainerImage"] == images[["t", "local", "creds"].index(t.id)]
        assert details["Message"]
        if t.id == "creds":
            assert "unauthorized" in details["Message"], details


def test_run_options_allowed_and_refused(
    client: BatchClient, pool: str, registry: Registry, uid: str
) -> None:
    job_id = f"ctropt-{uid}"
    new_job(client, job_id, pool)
    image = registry.image("test:1")
    ok = {"container_run_options": "--env GREETING=hi --read-only --entrypoint /bin/echo"}
    t = m.BatchTaskCreateOptions(
        id="ok",
        command_line="$GREETING from echo",
        container_settings=m.BatchTaskContainerSettings(image_name=image, **ok),  # type: ignore[arg-type]
    )
    client.create_task(job_id, t)
    (done,) = wait_tasks_done(client, job_id, 1, timeout=60)
    assert done.execution_info.exit_code == 0
    assert read(client, job_id, "ok", "stdout.txt") == "$GREETING from echo\n"  # no shell: no expansion
    for opts in (
        "--privileged",
        "-v /:/host",
        "--network host",
        "--pid=host",
        "--cap-add ALL",
        "--user 0",
        "image",
    ):
        with pytest.raises(HttpResponseError) as ei:
            client.create_task(
                job_id,
                ctask(f"bad-{uuid.uuid4().hex[:6]}", "true", image, settings={"container_run_options": opts}),
            )
        assert ei.value.status_code == 400 and ei.value.error.code == "InvalidPropertyValue", opts
        values = {d["key"]: d["value"] for d in ei.value.response.json()["values"]}
        assert values["PropertyName"] == "containerSettings.containerRunOptions", values
        assert values["Reason"], values


def test_bad_registry_credentials_make_the_node_unusable(client: BatchClient, registry: Registry) -> None:
    pool_id = f"ctrbad-{uuid.uuid4().hex[:8]}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            **container_pool(registry, password="wrong"),  # type: ignore[arg-type]
        )
    )
    try:

        def unusable() -> m.BatchNode | None:
            nodes = list(client.list_nodes(pool_id))
            return nodes[0] if nodes and nodes[0].state == "unusable" else None

        node = wait_for(unusable, 120, 0.2, "the node unusable")
        (err,) = node.errors
        assert err.code == "ContainerInvalidImage"
        details = {d.name: d.value for d in err.error_details}
        assert details["ContainerImage"] == registry.image("test:1")
        assert "unauthorized" in details["Message"]
        pool = client.get_pool(pool_id)
        (reg,) = pool.virtual_machine_configuration.container_configuration.container_registries
        assert reg.username == USER and reg.password is None  # never sent back
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_container_task_on_a_pool_without_containers(client: BatchClient, uid: str) -> None:
    _engine_or_fail()
    pool_id = f"plain-{uid}"
    create_pool(client, pool_id, nodes=1)
    try:
        wait_idle_nodes(client, pool_id, 1)
        job_id = f"plainctr-{uid}"
        new_job(client, job_id, pool_id)
        client.create_task(job_id, ctask("t", "true", LOCAL_IMAGE))  # accepted, as the service does
        (t,) = wait_tasks_done(client, job_id, 1, timeout=60)
        info = t.execution_info
        assert (info.failure_info.category, info.failure_info.code) == (
            "usererror",
            "ContainerInvalidSettings",
        )
        assert info.exit_code is None
    finally:
        client.begin_delete_pool(pool_id, polling_interval=0.2).result()


# --- bad input: 4xx naming the property, nothing stored ----------------------------------------------------------


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


def _cc(**kw: object) -> dict[str, object]:
    body = pool_body(f"bad-{uuid.uuid4().hex[:8]}")
    body["virtualMachineConfiguration"]["containerConfiguration"] = kw  # type: ignore[index]
    return body


@pytest.mark.parametrize(
    ("cc", "status", "code", "prop"),
    [
        ({}, 400, "MissingRequiredProperty", "virtualMachineConfiguration.containerConfiguration.type"),
        (
            {"type": "lxc"},
            400,
            "InvalidPropertyValue",
            "virtualMachineConfiguration.containerConfiguration.type",
        ),
        (
            {"type": "dockerCompatible", "containerImageNames": ["-rf"]},
            400,
            "InvalidPropertyValue",
            "virtualMachineConfiguration.containerConfiguration.containerImageNames[0]",
        ),
        (
            {
                "type": "dockerCompatible",
                "containerRegistries": [{"registryServer": "a b", "username": "u", "password": "p"}],
            },
            400,
            "InvalidPropertyValue",
            "virtualMachineConfiguration.containerConfiguration.containerRegistries[0].registryServer",
        ),
        (
            {
                "type": "dockerCompatible",
                "containerRegistries": [{"registryServer": "r.io", "username": "u"}],
            },
            400,
            "InvalidPropertyValue",
            "virtualMachineConfiguration.containerConfiguration.containerRegistries[0].username",
        ),
    ],
)
def test_bad_pool_container_configuration(
    raw: Raw, cc: dict[str, object], status: int, code: str, prop: str
) -> None:
    body = _cc(**cc)
    assert_error(raw.post("/pools", body), status, code, PropertyName=prop)
    assert raw.get(f"/pools/{body['id']}").status_code == 404


def test_registry_identity_reference_refused(raw: Raw) -> None:
    ident = {
        "resourceId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/z"
    }
    body = _cc(
        type="dockerCompatible", containerRegistries=[{"registryServer": "r.io", "identityReference": ident}]
    )
    assert_error(raw.post("/pools", body), 501, "NotImplemented")


@pytest.fixture(scope="module")
def raw_job(raw: Raw) -> str:
    pool_id = f"rawp-{uuid.uuid4().hex[:8]}"
    assert raw.post("/pools", pool_body(pool_id)).status_code == 201
    job_id = f"rawj-{uuid.uuid4().hex[:8]}"
    assert raw.post("/jobs", {"id": job_id, "poolInfo": {"poolId": pool_id}}).status_code == 201
    return job_id


@pytest.mark.parametrize(
    ("settings", "code", "prop"),
    [
        ({}, "MissingRequiredProperty", "containerSettings.imageName"),
        ({"imageName": "Bad Image"}, "InvalidPropertyValue", "containerSettings.imageName"),
        ({"imageName": "--privileged"}, "InvalidPropertyValue", "containerSettings.imageName"),
        (
            {"imageName": "x", "workingDirectory": "home"},
            "InvalidPropertyValue",
            "containerSettings.workingDirectory",
        ),
        (
            {"imageName": "x", "containerHostBatchBindMounts": [{"source": "/etc"}]},
            "InvalidPropertyValue",
            "containerSettings.containerHostBatchBindMounts[0].source",
        ),
        (
            {"imageName": "x", "containerRunOptions": "--rm 'unterminated"},
            "InvalidPropertyValue",
            "containerSettings.containerRunOptions",
        ),
        (
            {"imageName": "x", "containerRunOptions": "--mount type=bind,src=/,dst=/h"},
            "InvalidPropertyValue",
            "containerSettings.containerRunOptions",
        ),
        (
            {"imageName": "x", "containerRunOptions": "--label batchyard.node=other"},
            "InvalidPropertyValue",
            "containerSettings.containerRunOptions",
        ),
    ],
)
def test_bad_task_container_settings(
    raw: Raw, raw_job: str, settings: dict[str, object], code: str, prop: str
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    body = {"id": task_id, "commandLine": "true", "containerSettings": settings}
    assert_error(raw.post(f"/jobs/{raw_job}/tasks", body), 400, code, PropertyName=prop)
    assert raw.get(f"/jobs/{raw_job}/tasks/{task_id}").status_code == 404


def test_removing_the_pool_removes_its_running_containers(
    client: BatchClient, registry: Registry, uid: str
) -> None:
    pool_id = f"ctrdel-{uid}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            target_dedicated_nodes=1,
            **container_pool(registry),  # type: ignore[arg-type]
        )
    )
    (node,) = wait_idle_nodes(client, pool_id, 1, timeout=120)
    job_id = f"ctrdel-{uid}"
    new_job(client, job_id, pool_id)
    client.create_task(job_id, ctask("t", "sleep 300", registry.image("test:1")))
    wait_for(lambda: len(containers_of(node.id)) == 1 or None, 30, 0.1, "the container started")
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
    wait_for(lambda: not containers_of(node.id) or None, 30, 0.1, "no container left after the pool is gone")
