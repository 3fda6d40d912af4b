"""Account certificates (the legacy `/certificates` operations, decision 0130): validation and wire bodies.

Azure retired account certificates (29 February 2024) but the service still answers the five operations
(recordings of March 2025); azure-batch 15.1.0 dropped them, older clients and `az batch certificate` use them.
The certificate is parsed to check it against its thumbprint and to answer `publicData` (the DER of the public
certificate); the private key and the password are never kept. Pure functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from enum import StrEnum
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from batchyard.models import errors
from batchyard.models.wire import WireModel

Body = dict[str, Any]

_THUMBPRINT = re.compile(r"^[0-9a-fA-F]{40}$")
_FORMATS = ("pfx", "cer")
#: Bodies are small: the service refuses large ones anyway; a pfx of a few KB is typical.
MAX_DATA = 64 * 1024


class CertificateAddOptions(WireModel, kw_only=True):
    """The certificate-add body of the older clients (azure-batch 14.x `CertificateAddParameter`)."""

    thumbprint: str = msgspec.field(name="thumbprint")
    thumbprint_algorithm: str = msgspec.field(name="thumbprintAlgorithm")
    data: str = msgspec.field(name="data")
    certificate_format: str | msgspec.UnsetType = msgspec.field(
        name="certificateFormat", default=msgspec.UNSET
    )
    password: str | msgspec.UnsetType = msgspec.field(name="password", default=msgspec.UNSET)


class CertificateState(StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"
    DELETE_FAILED = "deletefailed"


_TRANSITIONS: dict[CertificateState, frozenset[CertificateState]] = {
    CertificateState.ACTIVE: frozenset({CertificateState.DELETING}),
    # a deletion either finishes (the row goes) or fails while pools still use the certificate
    CertificateState.DELETING: frozenset({CertificateState.DELETE_FAILED}),
    # canceldelete; or delete again
    CertificateState.DELETE_FAILED: frozenset({CertificateState.ACTIVE, CertificateState.DELETING}),
}


def check_transition(old: str, new: str) -> None:
    from batchyard.models.states import IllegalTransition

    if CertificateState(new) not in _TRANSITIONS[CertificateState(old)]:
        raise IllegalTransition(f"certificate {old} -> {new}")


def key_of(algorithm: str, thumbprint: str) -> str:
    return f"{algorithm.lower()}-{thumbprint.lower()}"


def path_of(algorithm: str, thumbprint: str) -> str:
    """The entity path: OData key syntax, as the service spells it in `url`."""
    return f"/certificates(thumbprintAlgorithm={algorithm},thumbprint={thumbprint})"


def check_path(algorithm: str, thumbprint: str) -> tuple[str, str]:
    """A certificate named in a URL: anything that cannot name a certificate is simply not found."""
    if algorithm.lower() != "sha1" or not _THUMBPRINT.match(thumbprint):
        raise errors.certificate_not_found()
    return "sha1", thumbprint.lower()


def _public_der(data: bytes, fmt: str, password: str | None) -> bytes:
    """The DER of the certificate in `data`; 400 naming `data` when it is not a certificate of that format."""
    try:
        if fmt == "cer":
            cert = (
                x509.load_pem_x509_certificate(data)
                if data.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_certificate(data)
            )
        else:
            _, loaded, _ = pkcs12.load_key_and_certificates(
                data, password.encode() if password is not None else None
            )
            if loaded is None:
                raise ValueError("the pfx holds no certificate")
            cert = loaded
    except (ValueError, TypeError) as e:
        reason = f"The data is not a valid {fmt} certificate"
        if fmt == "pfx":
            reason += " or the password is wrong"
        raise errors.invalid_property_value("data", "(certificate data)", f"{reason}: {e}") from None
    return cert.public_bytes(Encoding.DER)


def new_certificate(spec: Body, now: str) -> Body:
    """Validate a certificate-add body; the stored body (never the data's private part or the password)."""
    for k in ("thumbprint", "thumbprintAlgorithm", "data"):
        if not isinstance(spec.get(k), str) or not spec[k]:
            raise errors.missing_required_property(k)
    algorithm = spec["thumbprintAlgorithm"]
    if algorithm.lower() != "sha1":
        raise errors.invalid_property_value(
            "thumbprintAlgorithm", algorithm, "The thumbprint algorithm must be sha1"
        )
    thumbprint = spec["thumbprint"]
    if not _THUMBPRINT.match(thumbprint):
        raise errors.invalid_property_value(
            "thumbprint", thumbprint, "A sha1 thumbprint is 40 hexadecimal digits"
        )
    fmt = str(spec.get("certificateFormat", "pfx")).lower()
    if fmt not in _FORMATS:
        raise errors.invalid_property_value("certificateFormat", spec.get("certificateFormat"))
    password = spec.get("password")
    if password is not None and not isinstance(password, str):
        raise errors.invalid_property_value("password", "(not a string)")
    if fmt == "cer" and password:
        raise errors.invalid_property_value(
            "password", "(set)", "A password must be omitted for a certificate in cer format"
        )
    if len(spec["data"]) > MAX_DATA * 4 // 3 + 4:
        raise errors.invalid_property_value(
            "data", "(certificate data)", f"The data exceeds {MAX_DATA} bytes"
        )
    try:
        data = base64.b64decode(spec["data"], validate=True)
    except (binascii.Error, ValueError):
        raise errors.invalid_property_value("data", "(certificate data)", "The data is not base64") from None
    der = _public_der(data, fmt, password)
    actual = hashlib.sha1(der).hexdigest()  # noqa: S324 - the certificate's thumbprint is defined as sha1
    if actual != thumbprint.lower():
        raise errors.invalid_property_value(
            "thumbprint", thumbprint, f"The certificate's sha1 thumbprint is {actual}"
        )
    return {
        "thumbprint": thumbprint.lower(),
        "thumbprintAlgorithm": "sha1",
        "state": CertificateState.ACTIVE.value,
        "stateTransitionTime": now,
        "publicData": base64.b64encode(der).decode(),
    }


def reference_name(ref: Body) -> str:
    """How the service names a certificate in reference errors (recorded: `sha1-<thumbprint>`)."""
    return f"{str(ref.get('thumbprintAlgorithm', '')).lower()}-{str(ref.get('thumbprint', '')).lower()}"
