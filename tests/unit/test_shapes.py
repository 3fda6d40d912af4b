"""The pure shaping rules of issue 8: resize errors, node views, image checks, network defaults."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.models import errors, images
from batchyard.models.resources import (
    network_configuration,
    new_pool,
    node_view,
    pool_view,
    stopped_resize_errors,
)

NOW = "2026-01-01T00:00:00.0000000Z"
JAMMY = {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts"}


def _pool(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "p",
        "vmSize": "STANDARD_D2S_V3",
        "virtualMachineConfiguration": {
            "imageReference": dict(JAMMY),
            "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        },
    }
    body.update(extra)
    return body


def test_stopped_grow_reports_the_recorded_texts() -> None:
    pool = {"targetDedicatedNodes": 1, "currentDedicatedNodes": 0, "targetLowPriorityNodes": 2}
    assert stopped_resize_errors(pool) == [
        {
            "code": "ResizeStopped",
            "message": "Desired number of dedicated nodes could not be allocated due to a stop resize operation",
        },
        {
            "code": "ResizeStopped",
            "message": "Desired number of low priority nodes could not be allocated due to a stop resize operation",
        },
    ]


def test_stop_after_targets_reached_reports_nothing() -> None:
    assert stopped_resize_errors({"targetDedicatedNodes": 2, "currentDedicatedNodes": 2}) == []
    assert stopped_resize_errors({"targetDedicatedNodes": 0, "currentDedicatedNodes": 3}) == []


def test_pool_view_reports_communication_mode_only_with_nodes() -> None:
    assert "currentNodeCommunicationMode" not in pool_view({"currentDedicatedNodes": 0})
    assert pool_view({"currentLowPriorityNodes": 1})["currentNodeCommunicationMode"] == "simplified"


def test_node_view_windows_rdp_and_no_history() -> None:
    pool = _pool(
        virtualMachineConfiguration={
            "imageReference": {
                "publisher": "microsoftwindowsserver",
                "offer": "windowsserver",
                "sku": "2022-datacenter",
            },
            "nodeAgentSKUId": "batch.node.windows amd64",
        }
    )
    node = {
        "id": "n",
        "state": "idle",
        "previousState": "starting",
        "previousStateTransitionTime": NOW,
        "ipAddress": "127.0.0.1",
        "virtualMachineInfo": {"imageReference": {"publisher": "x", "version": "latest"}},
    }
    out = node_view(node, pool, 3)
    assert "previousState" not in out and "previousStateTransitionTime" not in out
    assert out["endpointConfiguration"]["inboundEndpoints"] == [
        {
            "name": "SSHRule.3",
            "protocol": "tcp",
            "publicIPAddress": "127.0.0.1",
            "publicFQDN": "localhost",
            "frontendPort": 3389,
            "backendPort": 3389,
        }
    ]
    assert out["virtualMachineInfo"]["imageReference"]["exactVersion"] == "latest"
    assert "exactVersion" not in node["virtualMachineInfo"]["imageReference"]  # input untouched


def test_node_view_custom_image_has_no_exact_version() -> None:
    node = {"virtualMachineInfo": {"imageReference": {"virtualMachineImageId": "/subscriptions/x"}}}
    out = node_view(node, _pool(), 0)
    assert "exactVersion" not in out["virtualMachineInfo"]["imageReference"]
    assert out["endpointConfiguration"]["inboundEndpoints"][0]["backendPort"] == 22


def test_new_pool_without_targets() -> None:
    body = new_pool(_pool(), NOW)
    assert body["targetDedicatedNodes"] == 0 and body["targetLowPriorityNodes"] == 0


def test_image_matching_is_case_insensitive_and_agent_checked() -> None:
    images.check_image(
        {
            "imageReference": {
                "publisher": "MicrosoftWindowsServer",
                "offer": "WindowsServer",
                "sku": "2016-Datacenter",
            },
            "nodeAgentSKUId": "Batch.Node.Windows AMD64",
        }
    )
    with pytest.raises(errors.BatchError) as exc:
        images.check_image({"imageReference": dict(JAMMY), "nodeAgentSKUId": "batch.node.debian 12"})
    assert dict(exc.value.values)["PropertyName"] == "nodeAgentSKUId"


def test_custom_image_needs_a_current_agent() -> None:
    images.check_image(
        {"imageReference": {"virtualMachineImageId": "/x"}, "nodeAgentSKUId": "batch.node.ubuntu 22.04"}
    )
    for agent in ("batch.node.ubuntu 18.04", "batch.node.nonsense"):
        with pytest.raises(errors.BatchError) as exc:
            images.check_image({"imageReference": {"virtualMachineImageId": "/x"}, "nodeAgentSKUId": agent})
        assert (exc.value.code, dict(exc.value.values)["PropertyName"]) == (
            "InvalidPropertyValue",
            "nodeAgentSKUId",
        )


def test_os_type_of() -> None:
    assert images.os_type_of("batch.node.windows amd64") == "windows"
    assert images.os_type_of("BATCH.NODE.UBUNTU 22.04") == "linux"


def test_network_configuration_defaults_and_order() -> None:
    out = network_configuration({"enableAcceleratedNetworking": True})
    assert list(out) == ["dynamicVNetAssignmentScope", "enableAcceleratedNetworking"]
    assert out == {"dynamicVNetAssignmentScope": "none", "enableAcceleratedNetworking": True}
    with pytest.raises(errors.BatchError) as exc:
        network_configuration({"dynamicVNetAssignmentScope": "job"})
    assert exc.value.status == 501


def test_node_view_hides_agent_info_until_the_agent_is_up() -> None:
    node = {"state": "starting", "nodeAgentInfo": {"version": "v", "lastUpdateTime": NOW}}
    assert "nodeAgentInfo" not in node_view(node, _pool(), 0)
    assert node_view(dict(node, state="idle"), _pool(), 0)["nodeAgentInfo"]["version"] == "v"


def test_pool_view_user_accounts_windows_and_linux() -> None:
    accounts = [
        {"name": "test1", "password": "x"},
        {"name": "test3", "password": "x", "elevationLevel": "admin"},
        {"name": "test4", "password": "x", "linuxUserConfiguration": {"sshPrivateKey": "AAAA=="}},
    ]
    win = _pool(userAccounts=accounts)
    win["virtualMachineConfiguration"]["nodeAgentSKUId"] = "batch.node.windows amd64"
    assert pool_view(win)["userAccounts"] == [
        {"name": "test1", "elevationLevel": "nonadmin", "windowsUserConfiguration": {"loginMode": "batch"}},
        {"name": "test3", "elevationLevel": "admin", "windowsUserConfiguration": {"loginMode": "batch"}},
        {"name": "test4", "elevationLevel": "nonadmin", "windowsUserConfiguration": {"loginMode": "batch"}},
    ]
    linux = pool_view(_pool(userAccounts=accounts))["userAccounts"]
    assert linux[0] == {"name": "test1", "elevationLevel": "nonadmin"}
    assert linux[2]["linuxUserConfiguration"] == {"sshPrivateKey": "AAAA=="}
    assert accounts[0]["password"] == "x"  # the stored body is not changed by the view


def test_data_disk_defaults_current_and_older_form() -> None:
    vm = {
        "imageReference": dict(JAMMY),
        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        "dataDisks": [
            {"lun": 0, "diskSizeGB": 50},
            {"lun": 1, "diskSizeGB": 5, "storageAccountType": "premium_lrs"},
        ],
    }
    disks = new_pool(_pool(virtualMachineConfiguration=vm), NOW)["virtualMachineConfiguration"]["dataDisks"]
    assert disks[0] == {
        "lun": 0,
        "diskSizeGB": 50,
        "caching": "none",
        "managedDisk": {"storageAccountType": "standard_lrs"},
    }
    assert disks[1] == {"lun": 1, "diskSizeGB": 5, "caching": "none", "storageAccountType": "premium_lrs"}
