"""The per-api-version shapes: the generated table and the pure request/response shaping."""

from __future__ import annotations

import pytest

from batchyard.models import errors, versions
from batchyard.models.versions_data import SHAPES, VERSIONS


def test_table_covers_every_documented_version() -> None:
    assert VERSIONS == (
        "2018-08-01.7.0",
        "2018-12-01.8.0",
        "2019-06-01.9.0",
        "2019-08-01.10.0",
        "2020-03-01.11.0",
        "2020-09-01.12.0",
        "2021-06-01.14.0",
        "2022-01-01.15.0",
        "2022-10-01.16.0",
        "2023-05-01.17.0",
        "2023-11-01.18.0",
        "2024-02-01.19.0",
        "2024-07-01.20.0",
        "2025-06-01.21.0",
    )
    assert versions.ACCEPTED == frozenset(VERSIONS) | {"2025-06-01"}
    for root in SHAPES:  # every root has its core properties in the newest version
        assert versions.allowed(root, versions.NEWEST), root


@pytest.mark.parametrize(
    ("root", "path", "first", "last"),
    [
        ("pool", "maxTasksPerNode", "2018-08-01.7.0", "2020-03-01.11.0"),
        ("pool", "taskSlotsPerNode", "2020-09-01.12.0", "2025-06-01.21.0"),
        ("pool", "certificateReferences", "2018-08-01.7.0", "2024-07-01.20.0"),
        ("pool", "taskSchedulingPolicy.jobDefaultOrder", "2025-06-01.21.0", "2025-06-01.21.0"),
        ("pool.create", "cloudServiceConfiguration", "2018-08-01.7.0", "2024-02-01.19.0"),
        ("task.create", "requiredSlots", "2020-09-01.12.0", "2025-06-01.21.0"),
        ("node", "ipv6Address", "2025-06-01.21.0", "2025-06-01.21.0"),
    ],
)
def test_known_property_spans(root: str, path: str, first: str, last: str) -> None:
    have = [v for v in VERSIONS if path in versions.allowed(root, v)]
    assert (have[0], have[-1]) == (first, last)
    assert have == list(VERSIONS[VERSIONS.index(first) : VERSIONS.index(last) + 1])


def test_unknown_version_is_refused() -> None:
    with pytest.raises(errors.BatchError) as e:
        versions.canonical("2017-09-01.6.0")
    assert e.value.code == "UnsupportedRequestVersion"
    assert versions.canonical("2025-06-01") == "2025-06-01.21.0"


def test_old_request_renamed_to_current_names() -> None:
    body = {"id": "p", "maxTasksPerNode": 4, "startTask": {"commandLine": "x"}}
    out = versions.upgrade_request("pool.create", "2019-08-01.10.0", body)
    assert out == {"id": "p", "taskSlotsPerNode": 4, "startTask": {"commandLine": "x"}}
    assert body["maxTasksPerNode"] == 4  # the input is not changed
    rf = {"id": "t", "commandLine": "x", "resourceFiles": [{"blobSource": "http://a/b", "filePath": "b"}]}
    out = versions.upgrade_request("task.create", "2018-08-01.7.0", rf)
    assert out["resourceFiles"] == [{"httpUrl": "http://a/b", "filePath": "b"}]


@pytest.mark.parametrize(
    ("root", "version", "body", "name"),
    [
        ("pool.create", "2019-08-01.10.0", {"id": "p", "taskSlotsPerNode": 2}, "taskSlotsPerNode"),
        (
            "pool.create",
            "2024-07-01.20.0",
            {"taskSchedulingPolicy": {"jobDefaultOrder": "none"}},
            "taskSchedulingPolicy.jobDefaultOrder",
        ),  # fmt: skip
        (
            "task.collection",
            "2019-06-01.9.0",
            {"value": [{"id": "a"}, {"id": "b", "requiredSlots": 1}]},
            "value[1].requiredSlots",
        ),  # fmt: skip
        ("pool.create", "2025-06-01", {"applicationLicenses": ["maya"]}, "applicationLicenses"),
        ("pool.create", "2022-01-01.15.0", {"id": "p", "nosuch": 1}, "nosuch"),
    ],
)
def test_properties_the_version_lacks_are_named(
    root: str, version: str, body: dict[str, object], name: str
) -> None:
    with pytest.raises(errors.BatchError) as e:
        versions.upgrade_request(root, version, body)
    assert e.value.code == "UnsupportedProperty"
    assert dict(e.value.values)["PropertyName"] == name


def test_free_form_maps_and_annotations_pass() -> None:
    body = {"odata.metadata": "x", "resourceTags": {"any": "thing"}, "displayName": None}
    assert versions.upgrade_request("pool.create", "2024-02-01.19.0", body) == body


def test_cloud_service_pools_get_the_retirement_error() -> None:
    with pytest.raises(errors.BatchError) as e:
        versions.upgrade_request(
            "pool.create", "2018-12-01.8.0", {"cloudServiceConfiguration": {"osFamily": "6"}}
        )
    assert (e.value.status, e.value.code) == (400, "InvalidPropertyValue")
    assert dict(e.value.values)["PropertyName"] == "cloudServiceConfiguration"


STORED_POOL = {
    "id": "p",
    "taskSlotsPerNode": 3,
    "taskSchedulingPolicy": {"nodeFillType": "Spread", "jobDefaultOrder": "none"},
    "x-batchyard-extension": 1,
}


def test_render_pool_per_version() -> None:
    old = versions.render("pool", "2018-12-01.8.0", STORED_POOL)
    assert old == {
        "id": "p",
        "maxTasksPerNode": 3,
        "taskSchedulingPolicy": {"nodeFillType": "Spread"},
        "x-batchyard-extension": 1,
        "certificateReferences": [],
    }
    mid = versions.render("pool", "2024-07-01.20.0", STORED_POOL)
    assert mid["taskSlotsPerNode"] == 3 and mid["certificateReferences"] == []
    assert "jobDefaultOrder" not in mid["taskSchedulingPolicy"]
    assert versions.render("pool", "2025-06-01", STORED_POOL) == STORED_POOL
    assert STORED_POOL["taskSchedulingPolicy"] == {"nodeFillType": "Spread", "jobDefaultOrder": "none"}


def test_render_keeps_certificate_references_given() -> None:
    refs = [{"thumbprint": "ab", "thumbprintAlgorithm": "sha1"}]
    assert (
        versions.render("node", "2023-05-01.17.0", {"certificateReferences": refs})["certificateReferences"]
        == refs
    )
    assert "certificateReferences" not in versions.render(
        "node", "2025-06-01.21.0", {"certificateReferences": refs}
    )


def test_render_task_counts_flat_before_12() -> None:
    stored = {"taskCounts": {"active": 1, "running": 0, "completed": 2, "succeeded": 2, "failed": 0},
              "taskSlotCounts": {"active": 1, "running": 0, "completed": 2, "succeeded": 2, "failed": 0}}  # fmt: skip
    assert versions.render("taskcounts", "2020-03-01.11.0", stored) == stored["taskCounts"]
    assert versions.render("taskcounts", "2020-09-01.12.0", stored) == stored


def test_render_operation_newer_than_version_keeps_current_shape() -> None:
    image = {"nodeAgentSKUId": "batch.node.ubuntu 22.04", "osType": "linux"}
    assert versions.render("image", "2018-08-01.7.0", image) == image


def test_errors_name_renamed_properties_as_the_client_sent_them() -> None:
    err = errors.invalid_property_value("taskSlotsPerNode", 999, "too many")
    assert dict(versions.error_in_version("2019-08-01.10.0", err).values)["PropertyName"] == "maxTasksPerNode"
    assert versions.error_in_version("2020-09-01.12.0", err) is err
    nested = errors.invalid_property_value("startTask.resourceFiles.httpUrl", "x")
    assert dict(versions.error_in_version("2018-08-01.7.0", nested).values)["PropertyName"] == (
        "startTask.resourceFiles.blobSource"
    )


def test_every_request_struct_maps_to_a_generated_root() -> None:
    from batchyard.api.versions import _REQUEST_ROOTS, _RESPONSE_ROOTS
    from batchyard.models import wire

    assert all(hasattr(wire, name) for name in _REQUEST_ROOTS)
    assert set(_REQUEST_ROOTS.values()) | set(_RESPONSE_ROOTS.values()) <= set(SHAPES)


def test_public_ips_of_2019_08_01_map_to_user_managed_addresses() -> None:
    ids = ["/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/publicIPAddresses/a"]
    out = versions.upgrade_request(
        "pool.create", "2019-08-01.10.0", {"networkConfiguration": {"publicIPs": ids}}
    )
    pac = {"provision": "usermanaged", "ipAddressIds": ids}
    assert out == {"networkConfiguration": {"publicIPAddressConfiguration": pac}}
    stored = {"id": "p", "networkConfiguration": {"publicIPAddressConfiguration": pac}}
    assert versions.render("pool", "2019-08-01.10.0", stored)["networkConfiguration"] == {"publicIPs": ids}
    assert versions.render("pool", "2020-03-01.11.0", stored) == dict(stored, certificateReferences=[])
    with pytest.raises(errors.BatchError):
        versions.upgrade_request(
            "pool.create", "2019-06-01.9.0", {"networkConfiguration": {"publicIPs": ids}}
        )


def test_free_form_map_is_one_in_every_version_that_has_it() -> None:
    body = {"poolInfo": {"autoPoolSpecification": {"pool": {"resourceTags": {"team": "a"}}}}}
    for version in ("2023-11-01.18.0", "2024-07-01.20.0"):
        versions.check_request("job.create", version, body)
