"""Bad input to the application package routes: the management surface (/batchyard/applications), the data
plane's reads and the agents' package routes. Every refusal is a Batch error naming what is wrong; a refused
upload stores nothing."""

from __future__ import annotations

import http.client
import io
import stat
import zipfile
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.support.live import LiveServer
from tests.support.raw import Raw, assert_error

ZIP = "application/zip"


def zip_of(*members: tuple[str, bytes, int]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


GOOD = zip_of(("bin/tool.sh", b"#!/bin/sh\necho hi\n", stat.S_IFREG | 0o755))


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield Raw(live)


def put(raw: Raw, path: str, content: bytes, ctype: str = ZIP, **kw: object) -> object:
    return raw.request("PUT", path, content=content, headers={"content-type": ctype}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "reason_part"),
    [
        (b"", "empty"),
        (b"this is not a zip", "not a valid zip"),
        (GOOD[:-30], "not a valid zip"),  # truncated: no central directory
        (zip_of(("../evil.txt", b"x", stat.S_IFREG | 0o644)), ".."),
        (zip_of(("a/../../evil.txt", b"x", stat.S_IFREG | 0o644)), ".."),
        (zip_of(("..\\evil.txt", b"x", stat.S_IFREG | 0o644)), ".."),
        (zip_of(("/etc/evil", b"x", stat.S_IFREG | 0o644)), "absolute"),
        (zip_of(("link", b"/etc/shadow", stat.S_IFLNK | 0o777)), "symbolic link"),
        (zip_of(("fifo", b"", stat.S_IFIFO | 0o644)), "special file"),
        (zip_of(("a", b"1", stat.S_IFREG | 0o644), ("a", b"2", stat.S_IFREG | 0o644)), "collides"),
    ],
)
def test_bad_packages_are_refused_and_nothing_is_stored(raw: Raw, content: bytes, reason_part: str) -> None:
    r = put(raw, "/batchyard/applications/badpkg/versions/1.0", content)
    body = assert_error(r, 400, "InvalidApplicationPackage")
    reason = {v["key"]: v["value"] for v in body["values"]}["Reason"]
    assert reason_part in reason, reason
    assert_error(raw.get("/batchyard/applications/badpkg"), 404, "ApplicationNotFound")
    assert_error(raw.get("/applications/badpkg"), 404, "ApplicationNotFound")


def test_corrupt_member_crc_is_refused(raw: Raw) -> None:
    data = bytearray(zip_of(("f.txt", b"A" * 200, stat.S_IFREG | 0o644)))
    at = bytes(data).index(b"A" * 200)
    data[at] = ord("B")  # stored (uncompressed): the CRC no longer matches
    r = put(raw, "/batchyard/applications/crcpkg/versions/1", bytes(data))
    assert_error(r, 400, "InvalidApplicationPackage")


def test_declared_huge_body_is_413_before_reading(live: LiveServer) -> None:
    u = urlsplit(live.endpoint)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=10)
    conn.putrequest("PUT", "/batchyard/applications/huge/versions/1?api-version=2025-06-01")
    conn.putheader("Content-Length", str((1 << 30) + 1))
    conn.putheader("Content-Type", ZIP)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert b"RequestBodyTooLarge" in resp.read()
    conn.close()


def test_management_json_bodies_are_bounded(raw: Raw) -> None:
    r = raw.request("PUT", "/batchyard/applications/bigjson", content=b" " * (1024 * 1024 + 1))
    assert_error(r, 413, "RequestBodyTooLarge")


@pytest.mark.parametrize(
    ("path", "prop"),
    [
        ("/batchyard/applications/bad!id/versions/1", "applicationId"),
        ("/batchyard/applications/" + "a" * 65 + "/versions/1", "applicationId"),
        ("/batchyard/applications/ok/versions/bad%20version", "version"),
        ("/batchyard/applications/ok/versions/" + "1" * 65, "version"),
    ],
)
def test_bad_ids_and_versions(raw: Raw, path: str, prop: str) -> None:
    assert_error(put(raw, path, GOOD), 400, "InvalidPropertyValue", PropertyName=prop)


@pytest.mark.parametrize(
    ("body", "code", "prop"),
    [
        (b"{not json", "InvalidRequestBody", None),
        (b"[1]", "InvalidRequestBody", None),
        (b'{"displayName": "x", "owner": "me"}', "UnsupportedProperty", "owner"),
        (b'{"allowUpdates": "yes"}', "InvalidPropertyValue", "allowUpdates"),
        (b'{"displayName": 5}', "InvalidPropertyValue", "displayName"),
    ],
)
def test_bad_settings_bodies(raw: Raw, body: bytes, code: str, prop: str | None) -> None:
    r = raw.request("PUT", "/batchyard/applications/settings-app", content=body)
    values = {"PropertyName": prop} if prop else {}
    assert_error(r, 400, code, **values)


def test_default_version_must_exist_and_versions_can_be_locked(raw: Raw) -> None:
    assert put(raw, "/batchyard/applications/locked/versions/1", GOOD).status_code == 201  # type: ignore[attr-defined]
    r = raw.request("PATCH", "/batchyard/applications/locked", json_body={"defaultVersion": "2"})
    assert_error(r, 400, "InvalidPropertyValue", PropertyName="defaultVersion")
    r = raw.request("PATCH", "/batchyard/applications/locked", json_body={"allowUpdates": False})
    assert r.status_code == 200 and r.json()["allowUpdates"] is False
    assert_error(put(raw, "/batchyard/applications/locked/versions/1", GOOD), 409, "ApplicationPackageExists")
    assert_error(raw.delete("/batchyard/applications/locked/versions/9"), 404, "ApplicationPackageNotFound")
    assert_error(raw.delete("/batchyard/applications/nothere"), 404, "ApplicationNotFound")
    assert_error(
        raw.request("PATCH", "/batchyard/applications/nothere", json_body={}), 404, "ApplicationNotFound"
    )
    assert raw.delete("/batchyard/applications/locked/versions/1").status_code == 200
    assert_error(raw.get("/applications/locked"), 404, "ApplicationNotFound")  # no active version left
    assert raw.delete("/batchyard/applications/locked").status_code == 200


def test_authentication_and_api_version(raw: Raw) -> None:
    assert_error(
        put(raw, "/batchyard/applications/auth/versions/1", GOOD, key=None), 401, "AuthenticationRequired"
    )
    bad_key = "AAAA" + raw.key[4:]
    assert_error(
        put(raw, "/batchyard/applications/auth/versions/1", GOOD, key=bad_key), 403, "AuthenticationFailed"
    )
    r = put(raw, "/batchyard/applications/auth/versions/1", GOOD, api_version=None)
    assert_error(r, 400, "MissingRequiredQueryParameter")
    assert_error(raw.get("/batchyard/applications/auth"), 404, "ApplicationNotFound")


@pytest.mark.parametrize(
    "path",
    [
        "/batchyard/agent/v1/packages",
        "/batchyard/agent/v1/packages/x",
        "/batchyard/agent/v1/packages/x/1/content",
    ],
)
def test_agent_package_routes_need_a_node_token(live: LiveServer, path: str) -> None:
    import httpx

    r = httpx.get(live.endpoint + path)
    assert r.status_code == 401 and r.json()["code"] == "AuthenticationRequired"
    r = httpx.get(
        live.endpoint + path, headers={"x-batchyard-node-id": "tvmps_nope", "x-batchyard-node-token": "t"}
    )
    assert r.status_code == 404 and r.json()["code"] == "NodeNotFound"
