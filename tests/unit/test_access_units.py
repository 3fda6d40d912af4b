"""Pure parts of node access: certificate checks, NAT pool rules and endpoints, the account expiry day."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from batchyard.models import errors
from batchyard.models.certificates import check_path, new_certificate
from batchyard.models.resources import check_nat_pools, endpoint_rules, node_endpoints
from batchyard.pools.hostusers import _day
from tests.conformance.test_certificates import make_cert, thumb

NOW = "2026-01-01T00:00:00Z"


def test_cer_in_pem_or_der_and_pfx() -> None:
    cert, pfx = make_cert("unit")
    tp = thumb(cert)
    der = cert.public_bytes(Encoding.DER)
    for data in (der, cert.public_bytes(Encoding.PEM)):
        body = new_certificate(
            {
                "thumbprint": tp,
                "thumbprintAlgorithm": "sha1",
                "data": base64.b64encode(data).decode(),
                "certificateFormat": "cer",
            },
            NOW,
        )
        assert body["publicData"] == base64.b64encode(der).decode()
    body = new_certificate(
        {
            "thumbprint": tp.upper(),
            "thumbprintAlgorithm": "SHA1",
            "data": base64.b64encode(pfx).decode(),
            "password": "secret",
        },
        NOW,
    )
    assert (body["thumbprint"], body["thumbprintAlgorithm"], body["state"]) == (tp, "sha1", "active")
    assert set(body) == {"thumbprint", "thumbprintAlgorithm", "state", "stateTransitionTime", "publicData"}


def test_certificate_paths() -> None:
    assert check_path("SHA1", "A" * 40) == ("sha1", "a" * 40)
    for alg, tp in (("md5", "a" * 40), ("sha1", "a" * 39), ("sha1", "g" * 40)):
        with pytest.raises(errors.BatchError) as ei:
            check_path(alg, tp)
        assert ei.value.code == "CertificateNotFound"


def nat(
    name: str = "r", backend: int = 8080, start: int = 20000, end: int = 20039, **kw: object
) -> dict[str, object]:
    return {
        "name": name,
        "protocol": "tcp",
        "backendPort": backend,
        "frontendPortRangeStart": start,
        "frontendPortRangeEnd": end,
        **kw,
    }


def test_nat_pool_rules() -> None:
    check_nat_pools([nat(), nat("s.2_", 8081, 30000, 30039)])
    check_nat_pools([nat(start=1, end=40), nat("b", 22, 55001, 65534)])
    bad = [
        [nat(start=49990, end=50039)],
        [nat(start=49000, end=56000)],
        [nat(end=20038)],
        [nat(name="a_")] * 2,
        [nat(name="x.")],
        [nat(protocol="icmp")],
        [nat(backend=29877)],
        [
            nat(
                networkSecurityGroupRules=[
                    {"priority": 100 + i, "access": "allow", "sourceAddressPrefix": "*"} for i in range(26)
                ]
            )
        ],
    ]
    for nats in bad:
        with pytest.raises(errors.BatchError) as ei:
            check_nat_pools(nats)
        assert ei.value.status == 400 and ei.value.code == "InvalidPropertyValue", nats


def test_endpoints_report_the_forwarded_port() -> None:
    linux = {"virtualMachineConfiguration": {"nodeAgentSKUId": "batch.node.ubuntu 22.04"}}
    assert endpoint_rules(linux) == [("SSHRule", "tcp", 22, None)]
    (ep,) = node_endpoints(linux, 3, "127.0.0.1", {"SSHRule": ("10.0.0.9", 40001)})["inboundEndpoints"]
    assert (ep["name"], ep["publicIPAddress"], ep["frontendPort"], ep["backendPort"]) == (
        "SSHRule.3",
        "10.0.0.9",
        40001,
        22,
    )
    (ep,) = node_endpoints(linux, 3, "127.0.0.1")["inboundEndpoints"]
    assert (ep["frontendPort"], ep["backendPort"]) == (22, 22)  # no forwarder: the node's own port
    pool = dict(
        linux,
        networkConfiguration={"endpointConfiguration": {"inboundNATPools": [nat("web", 80, 15000, 15099)]}},
    )
    assert endpoint_rules(pool) == [("web", "tcp", 80, (15000, 15099))]


def test_expiry_is_rounded_up_to_a_day() -> None:
    utc = datetime.UTC
    assert _day(datetime.datetime(2026, 3, 4, 0, 0, tzinfo=utc)) == "2026-03-04"
    assert _day(datetime.datetime(2026, 3, 4, 0, 0, 1, tzinfo=utc)) == "2026-03-05"
    assert (
        _day(datetime.datetime(2026, 3, 4, 23, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-2))))
        == "2026-03-06"
    )
