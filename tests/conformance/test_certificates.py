"""Account certificates (legacy operations, decision 0130): the azure-batch 14.2.0 client's own calls, and the
recorded answers at 2024-07-01.20.0 and 2025-06-01 (azure-batch 15.1.0 dropped the operations).

Recorded (March 2025): add 201, list/get 200 `{thumbprint, thumbprintAlgorithm, url, state: active,
stateTransitionTime, publicData}`, canceldelete on an active certificate 409 `CertificateStateActive`, delete 202.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, pkcs12
from cryptography.x509.oid import NameOID

from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body, raw_deleting_pools

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("BATCHYARD_SDK_VENVS", REPO / ".venv-sdk"))
RECORDED = "2024-07-01.20.0"
OLD = "2024-02-01.19.0"


def make_cert(cn: str) -> tuple[x509.Certificate, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pfx = pkcs12.serialize_key_and_certificates(b"c", key, cert, None, BestAvailableEncryption(b"secret"))
    return cert, pfx


def thumb(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest()


def add_body(cert: x509.Certificate, pfx: bytes, **extra: Any) -> dict[str, Any]:
    body = {
        "thumbprint": thumb(cert),
        "thumbprintAlgorithm": "sha1",
        "data": base64.b64encode(pfx).decode(),
        "certificateFormat": "pfx",
        "password": "secret",
    }
    body.update(extra)
    return body


def path(tp: str) -> str:
    return f"/certificates(thumbprintAlgorithm=sha1,thumbprint={tp})"


@pytest.fixture(scope="module")
def raw(live: LiveServer) -> Iterator[Raw]:
    yield from raw_deleting_pools(live)


@pytest.mark.parametrize("version", [RECORDED, "2025-06-01", "2018-08-01.7.0"])
def test_certificate_lifecycle_as_recorded(raw: Raw, version: str) -> None:
    cert, pfx = make_cert(f"by-{version}")
    tp = thumb(cert)
    r = raw.post("/certificates", add_body(cert, pfx), api_version=version)
    assert r.status_code == 201, r.text()
    assert r.text() == ""
    assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert r.headers["DataServiceId"].endswith(f"/certificates(ThumbprintAlgorithm=sha1,Thumbprint={tp})")

    listed = raw.json("/certificates", api_version=version)
    assert listed["odata.metadata"].endswith("/$metadata#certificates")
    mine = [c for c in listed["value"] if c["thumbprint"] == tp]
    assert len(mine) == 1
    got = raw.get(path(tp), api_version=version)
    assert got.status_code == 200
    assert got.headers["ETag"]
    body = got.json()
    assert list(body) == [
        "odata.metadata",
        "thumbprint",
        "thumbprintAlgorithm",
        "url",
        "state",
        "stateTransitionTime",
        "publicData",
    ]
    assert body["odata.metadata"].endswith("/$metadata#certificates/@Element")
    assert body["url"] == raw.endpoint + path(tp)
    assert body["state"] == "active"
    assert base64.b64decode(body["publicData"]) == cert.public_bytes(Encoding.DER)
    assert "data" not in body and "password" not in body
    assert mine[0] == {k: v for k, v in body.items() if k != "odata.metadata"}
    # upper-case thumbprints name the same certificate
    assert raw.get(path(tp.upper()), api_version=version).status_code == 200

    assert_error(raw.post(path(tp) + "/canceldelete", api_version=version), 409, "CertificateStateActive")
    assert_error(
        raw.post("/certificates", add_body(cert, pfx), api_version=version), 409, "CertificateExists"
    )

    d = raw.delete(path(tp), api_version=version)
    assert d.status_code == 202, d.text()
    deleting = raw.json(path(tp), api_version=version)
    if deleting["state"] == "deleting":  # the deleting moment may already be over
        assert deleting["previousState"] == "active"
        assert_error(
            raw.post(path(tp) + "/canceldelete", api_version=version), 409, "CertificateBeingDeleted"
        )
    wait_for(lambda: raw.get(path(tp), api_version=version).status_code == 404, 10, 0.1, "deletion")
    assert_error(raw.get(path(tp), api_version=version), 404, "CertificateNotFound")
    assert_error(raw.delete(path(tp), api_version=version), 404, "CertificateNotFound")


def test_cer_format_and_filters(raw: Raw) -> None:
    cert, _ = make_cert("cer")
    tp = thumb(cert)
    der = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    body = {"thumbprint": tp.upper(), "thumbprintAlgorithm": "SHA1", "data": der, "certificateFormat": "cer"}
    r = raw.post("/certificates", body, api_version=RECORDED)
    assert r.status_code == 201, r.text()
    active = raw.json("/certificates", params={"$filter": "state eq 'active'"}, api_version=RECORDED)
    assert tp in [c["thumbprint"] for c in active["value"]]
    deleting = raw.json("/certificates", params={"$filter": "state eq 'deleting'"}, api_version=RECORDED)
    assert tp not in [c["thumbprint"] for c in deleting["value"]]
    sel = raw.json(path(tp), params={"$select": "thumbprint,state"}, api_version=RECORDED)
    assert set(sel) == {"odata.metadata", "thumbprint", "state"}
    assert raw.delete(path(tp), api_version=RECORDED).status_code == 202


def test_bad_certificates(raw: Raw) -> None:
    cert, pfx = make_cert("bad")
    good = add_body(cert, pfx)
    post = lambda b: raw.post("/certificates", b, api_version=RECORDED)  # noqa: E731
    assert_error(post({k: v for k, v in good.items() if k != "data"}), 400, "MissingRequiredProperty")
    assert_error(
        post(dict(good, thumbprintAlgorithm="md5")),
        400,
        "InvalidPropertyValue",
        PropertyName="thumbprintAlgorithm",
    )
    assert_error(post(dict(good, thumbprint="xyz")), 400, "InvalidPropertyValue", PropertyName="thumbprint")
    assert_error(
        post(dict(good, thumbprint="0" * 40)), 400, "InvalidPropertyValue", PropertyName="thumbprint"
    )
    assert_error(post(dict(good, password="wrong")), 400, "InvalidPropertyValue", PropertyName="data")
    assert_error(post(dict(good, data="!!not base64!!")), 400, "InvalidPropertyValue", PropertyName="data")
    assert_error(
        post(dict(good, certificateFormat="pem")),
        400,
        "InvalidPropertyValue",
        PropertyName="certificateFormat",
    )
    assert_error(
        post(dict(good, certificateFormat="cer")), 400, "InvalidPropertyValue", PropertyName="password"
    )
    assert_error(post(dict(good, extra=1)), 400, "UnsupportedProperty", PropertyName="extra")
    assert_error(
        raw.request("POST", "/certificates", content=b"{", api_version=RECORDED), 400, "InvalidRequestBody"
    )
    assert_error(
        raw.get("/certificates(thumbprintAlgorithm=md5,thumbprint=abc)", api_version=RECORDED),
        404,
        "CertificateNotFound",
    )
    assert_error(raw.get(path("f" * 40), api_version=RECORDED), 404, "CertificateNotFound")
    assert_error(raw.post(path("f" * 40) + "/canceldelete", api_version=RECORDED), 404, "CertificateNotFound")
    assert_error(
        raw.get("/certificates", params={"$filter": "thumbprint eq 'x'"}, api_version=RECORDED),
        400,
        "InvalidQueryParameterValue",
    )


def test_pool_certificate_references(raw: Raw, uid: str) -> None:
    """Unknown certificates: the service's 409 naming each; known ones: refused (never stored and ignored)."""
    cert, pfx = make_cert("ref")
    tp = thumb(cert)
    ref = {"thumbprint": tp, "thumbprintAlgorithm": "sha1", "storeLocation": "currentuser"}
    r = raw.post("/pools", pool_body(f"cr-{uid}", certificateReferences=[ref]), api_version=OLD)
    assert_error(
        r, 409, "InvalidCertificateReferences", **{f"sha1-{tp}": "The specified certificate does not exist."}
    )
    assert raw.post("/certificates", add_body(cert, pfx), api_version=OLD).status_code == 201
    r = raw.post("/pools", pool_body(f"cr-{uid}", certificateReferences=[ref]), api_version=OLD)
    assert_error(r, 501, "NotImplemented")
    assert raw.get(f"/pools/cr-{uid}", api_version=OLD).status_code == 404
    assert (
        raw.post("/pools", pool_body(f"cr-{uid}", certificateReferences=[]), api_version=OLD).status_code
        == 201
    )
    assert raw.json(f"/pools/cr-{uid}", api_version=RECORDED)["certificateReferences"] == []
    r = raw.request("PATCH", f"/pools/cr-{uid}", json_body={"certificateReferences": [ref]}, api_version=OLD)
    assert_error(r, 501, "NotImplemented")
    r = raw.post(
        f"/pools/cr-{uid}/updateproperties",
        {
            "certificateReferences": [dict(ref, thumbprint="a" * 40)],
            "applicationPackageReferences": [],
            "metadata": [],
        },
        api_version=OLD,
    )
    assert_error(r, 409, "InvalidCertificateReferences")
    assert raw.delete(path(tp), api_version=OLD).status_code == 202


SDK_FLOW = r"""
import base64, json, sys, time
import azure.batch.models as m
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from azure.batch.models import BatchErrorException

endpoint, account, key, tp, data = sys.argv[1:6]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
client.certificate.add(m.CertificateAddParameter(
    thumbprint=tp, thumbprint_algorithm="sha1", data=data, certificate_format="pfx", password="secret"))
listed = [c.thumbprint for c in client.certificate.list()]
got = client.certificate.get("sha1", tp)
try:
    client.certificate.cancel_deletion("sha1", tp)
    cancel = "ok"
except BatchErrorException as e:
    cancel = e.error.code
client.certificate.delete("sha1", tp)
deadline = time.monotonic() + 10
gone = False
while time.monotonic() < deadline and not gone:
    try:
        client.certificate.get("sha1", tp)
        time.sleep(0.1)
    except BatchErrorException as e:
        gone = e.error.code == "CertificateNotFound"
print(json.dumps({"listed": tp in listed, "state": str(got.state.value if hasattr(got.state, "value") else got.state),
                  "public": got.public_data, "cancel": cancel, "gone": gone}))
"""


def test_legacy_sdk_certificate_operations(live: LiveServer) -> None:
    py = VENVS / "14.2.0" / "bin" / "python"
    if not py.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no venv for azure-batch 14.2.0 at {py}: run scripts/sdk-venvs")
        pytest.skip("no azure-batch 14.2.0 venv")
    cert, pfx = make_cert("sdk")
    tp = thumb(cert)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(py), "-c", SDK_FLOW, live.endpoint, live.account, live.key, tp, base64.b64encode(pfx).decode()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {
        "listed": True,
        "state": "active",
        "public": base64.b64encode(cert.public_bytes(Encoding.DER)).decode(),
        "cancel": "CertificateStateActive",
        "gone": True,
    }
