"""Pool `mountConfiguration` through the official SDK: stored and read back as sent (credentials never returned),
and each node really mounts it or reports why not. This host cannot serve NFS or CIFS (the container's kernel
has no NFS client, cifs-utils and blobfuse2 are not installed), so the tests drive the failure paths: the node
goes `unusable` with a `MountConfigurationError` node error naming the mount and the reason, and no task runs
there. Rules: reference semantics/data-staging.md §4, decision 0142."""

from __future__ import annotations

from typing import Any

import pytest
from azure.batch import BatchClient
from azure.batch import models as m

from tests.support.batch import IMAGE, SKU
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body


def _pool(client: BatchClient, pool_id: str, mounts: list[m.MountConfiguration], nodes: int) -> None:
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=nodes,
            mount_configuration=mounts,
        )
    )


def _unusable(client: BatchClient, pool_id: str) -> m.BatchNode:
    def reached() -> m.BatchNode | None:
        nodes = list(client.list_nodes(pool_id))
        assert all(n.state != "idle" for n in nodes), "a node whose mount failed must never be idle"
        return nodes[0] if nodes and nodes[0].state == "unusable" else None

    return wait_for(reached, 90, 0.2, f"the node of {pool_id} unusable")


def _detail(node: m.BatchNode) -> dict[str, str]:
    assert node.errors, "the node says why"
    err = node.errors[0]
    assert err.code == "MountConfigurationError" and err.message
    return {d.name: d.value for d in err.error_details or [] if d.name}


def test_configuration_is_returned_as_sent_without_credentials(client: BatchClient, uid: str) -> None:
    mounts = [
        m.MountConfiguration(
            azure_blob_file_system_configuration=m.AzureBlobFileSystemConfiguration(
                account_name="acct",
                container_name="data",
                account_key="c2VjcmV0",
                relative_mount_path="blob",
                blobfuse_options="-o attr_timeout=240",
            )
        ),
        m.MountConfiguration(
            nfs_mount_configuration=m.NfsMountConfiguration(
                source="10.0.0.4:/exports", relative_mount_path="nfs", mount_options="-o vers=4"
            )
        ),
        m.MountConfiguration(
            cifs_mount_configuration=m.CifsMountConfiguration(
                username="u", password="hunter2", source="//10.0.0.5/share", relative_mount_path="cifs"
            )
        ),
        m.MountConfiguration(
            azure_file_share_configuration=m.AzureFileShareConfiguration(
                account_name="acct",
                azure_file_url="https://acct.file.core.windows.net/share",
                account_key="a2V5",
                relative_mount_path="files",
                mount_options="-o vers=3.0",
            )
        ),
    ]
    pool_id = f"mnt-{uid}"
    _pool(client, pool_id, mounts, 0)
    got = client.get_pool(pool_id).mount_configuration
    assert got is not None and len(got) == 4
    blob = got[0].azure_blob_file_system_configuration
    assert blob is not None and blob.account_name == "acct" and blob.container_name == "data"
    assert blob.relative_mount_path == "blob" and blob.blobfuse_options == "-o attr_timeout=240"
    assert blob.account_key is None  # never returned (recorded)
    nfs = got[1].nfs_mount_configuration
    assert nfs is not None and nfs.source == "10.0.0.4:/exports" and nfs.mount_options == "-o vers=4"
    cifs = got[2].cifs_mount_configuration
    assert cifs is not None and cifs.username == "u" and cifs.password is None
    files = got[3].azure_file_share_configuration
    assert files is not None and files.azure_file_url.endswith("/share") and files.account_key is None
    listed = [p for p in client.list_pools() if p.id == pool_id][0]
    assert (
        listed.mount_configuration is not None
        and listed.mount_configuration[2].cifs_mount_configuration.password is None
    )  # type: ignore[union-attr]
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_nfs_mount_that_cannot_be_made_makes_the_node_unusable(client: BatchClient, uid: str) -> None:
    """127.0.0.1 serves no NFS here (and the kernel may have no NFS client): a failed mount, never a silent one."""
    pool_id = f"mntnfs-{uid}"
    nfs = m.NfsMountConfiguration(
        source="127.0.0.1:/nothing-exported",
        relative_mount_path="shared/nfs",
        mount_options="-o timeo=5,retrans=0,soft",
    )
    _pool(client, pool_id, [m.MountConfiguration(nfs_mount_configuration=nfs)], 1)
    job_id = f"mntjob-{uid}"
    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="t", command_line="/bin/true"))
    node = _unusable(client, pool_id)
    d = _detail(node)
    assert d["RelativeMountPath"] == "shared/nfs" and d["MountType"] == "nfsMountConfiguration"
    assert d["Reason"], d
    # the task never ran on the unusable node
    assert client.get_task(job_id, "t").state == "active"
    client.begin_delete_job(job_id, polling_interval=0.2).result()
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


@pytest.mark.parametrize(
    ("mount", "reason"),
    [
        (
            m.MountConfiguration(
                azure_blob_file_system_configuration=m.AzureBlobFileSystemConfiguration(
                    account_name="acct", container_name="data", sas_key="sv=x", relative_mount_path="blob"
                )
            ),
            "blobfuse",
        ),
        (
            m.MountConfiguration(
                cifs_mount_configuration=m.CifsMountConfiguration(
                    username="u", password="p", source="//127.0.0.1/none", relative_mount_path="cifs"
                )
            ),
            "",
        ),
        (
            m.MountConfiguration(
                azure_file_share_configuration=m.AzureFileShareConfiguration(
                    account_name="acct",
                    azure_file_url="https://127.0.0.1/share",
                    account_key="a2V5",
                    relative_mount_path="files",
                )
            ),
            "",
        ),
    ],
)
def test_other_mount_failures_are_node_errors(
    client: BatchClient, uid: str, mount: m.MountConfiguration, reason: str
) -> None:
    pool_id = f"mntx-{uid}"
    _pool(client, pool_id, [mount], 1)
    d = _detail(_unusable(client, pool_id))
    assert d["Reason"] and reason in d["Reason"], d
    assert "p" not in d["Reason"].split() and "a2V5" not in d["Reason"]  # credentials never echoed
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Raw:
    return Raw(live)


NFS = {"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": "n"}}


@pytest.mark.parametrize(
    ("mounts", "status", "code", "prop"),
    [
        ([{}], 400, "InvalidPropertyValue", "mountConfiguration[0]"),
        (
            [
                {
                    **NFS,
                    "cifsMountConfiguration": {
                        "username": "u",
                        "password": "p",
                        "source": "s",
                        "relativeMountPath": "c",
                    },
                }
            ],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[0]",
        ),
        (
            [{"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": "../escape"}}],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[0].nfsMountConfiguration.relativeMountPath",
        ),
        (
            [{"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": "/abs"}}],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[0].nfsMountConfiguration.relativeMountPath",
        ),
        (
            [NFS, {"nfsMountConfiguration": {"source": "h:/y", "relativeMountPath": "n/inner"}}],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[1].nfsMountConfiguration.relativeMountPath",
        ),
        (
            [{"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": f"m{i}"}} for i in range(11)],
            400,
            "InvalidPropertyValue",
            "mountConfiguration",
        ),
        (
            [
                {
                    "azureBlobFileSystemConfiguration": {
                        "accountName": "a",
                        "containerName": "c",
                        "accountKey": "k",
                        "sasKey": "s",
                        "relativeMountPath": "b",
                    }
                }
            ],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[0].azureBlobFileSystemConfiguration",
        ),
        (
            [
                {
                    "azureFileShareConfiguration": {
                        "accountName": "a",
                        "azureFileUrl": "not a url",
                        "accountKey": "k",
                        "relativeMountPath": "f",
                    }
                }
            ],
            400,
            "InvalidPropertyValue",
            "mountConfiguration[0].azureFileShareConfiguration.azureFileUrl",
        ),
        ([{"nfsMountConfiguration": {"relativeMountPath": "n"}}], 400, "MissingRequiredProperty", ""),
        (
            [
                {
                    "azureBlobFileSystemConfiguration": {
                        "accountName": "a",
                        "containerName": "c",
                        "relativeMountPath": "b",
                        "identityReference": {"resourceId": "/subscriptions/x"},
                    }
                }
            ],
            501,
            "NotImplemented",
            "",
        ),
    ],
)
def test_bad_mount_configurations(
    raw: Raw, uid: str, mounts: list[Any], status: int, code: str, prop: str
) -> None:
    pool_id = f"badm-{uid}"
    r = raw.post("/pools", pool_body(pool_id, mountConfiguration=mounts))
    if prop:
        assert_error(r, status, code, PropertyName=prop)
    else:
        assert_error(r, status, code)
    assert raw.get(f"/pools/{pool_id}").status_code == 404


def test_patch_mounts_checked_and_only_on_an_empty_pool(raw: Raw, client: BatchClient, uid: str) -> None:
    pool_id = f"patchm-{uid}"
    assert raw.post("/pools", pool_body(pool_id)).status_code == 201
    bad = [{"nfsMountConfiguration": {"source": "h:/x", "relativeMountPath": ".."}}]
    assert_error(
        raw.request("PATCH", f"/pools/{pool_id}", json_body={"mountConfiguration": bad}),
        400,
        "InvalidPropertyValue",
        PropertyName="mountConfiguration[0].nfsMountConfiguration.relativeMountPath",
    )
    r = raw.request("PATCH", f"/pools/{pool_id}", json_body={"mountConfiguration": [NFS]})
    assert r.status_code == 200, r.text()
    got = client.get_pool(pool_id).mount_configuration
    assert got is not None and got[0].nfs_mount_configuration.source == "h:/x"  # type: ignore[union-attr]
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()


def test_start_task_waits_for_the_mounts(client: BatchClient, uid: str) -> None:
    """As on the service, a node mounts first and then runs its start task: a node whose mount failed never
    ran it."""
    pool_id = f"mntst-{uid}"
    client.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=m.VirtualMachineConfiguration(
                image_reference=IMAGE, node_agent_sku_id=SKU
            ),
            target_dedicated_nodes=1,
            start_task=m.BatchStartTask(command_line="/bin/true"),
            mount_configuration=[
                m.MountConfiguration(
                    azure_blob_file_system_configuration=m.AzureBlobFileSystemConfiguration(
                        account_name="acct", container_name="data", sas_key="sv=x", relative_mount_path="blob"
                    )
                )
            ],
        )
    )
    node = _unusable(client, pool_id)
    assert _detail(node)["MountType"] == "azureBlobFileSystemConfiguration"
    assert node.start_task_info is None
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
