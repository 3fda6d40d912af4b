"""Shared Key authentication: verify `Authorization: SharedKey <account>:<signature>` the way Batch does.

Pure (no I/O, no logging) so it can be unit-tested against the real SDK signers and called on every request.

Why several string-to-sign *variants*: the official clients do not canonicalise identically (see
shared/reference/azure-batch-api/rest_api.md §2.3). Python 15.x/14.x (`azure/batch/_patch.py`,
`batch_auth.py`) sign query names as sent, sorted case-sensitively, the account name as given, the `Date`
slot even when `ocp-date` is set, headers *containing* ``ocp-`` and a missing Content-Length of a
non-GET/HEAD request as ``0``. Java (`BatchSharedKeyCredentialsPolicy`) lowercases query names and the
account, keeps the last value of a repeated name, blanks the `Date` slot when `ocp-date` is set, signs
headers *starting with* ``ocp-`` and the Content-Length as set when it signed (often empty, while the wire
later carries ``0``). A server cannot tell which client it talks to, so it tries a handful of candidates.
The Python form is built first; the others only if it does not match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from batchyard.models import errors
from batchyard.models.errors import BatchError

__all__ = [
    "SignedRequest",
    "compute_signature",
    "string_to_sign_variants",
    "verify_shared_key",
]

# The standard headers, in the order they appear in the string to sign (values only, one per line).
_STANDARD_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
_CL_INDEX = _STANDARD_HEADERS.index("content-length")
_DATE_INDEX = _STANDARD_HEADERS.index("date")
_BODYLESS_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request that take part in the signature, exactly as received.

    `raw_path` must stay percent-encoded (ASGI ``scope["raw_path"]`` decoded latin-1): clients sign the
    encoded path, e.g. ``/jobs/j/tasks/t/files/wd%2Fout.txt``. `headers` maps lowercased names to the first
    value.
    """

    method: str
    raw_path: str
    query_string: str
    headers: Mapping[str, str]


def compute_signature(string_to_sign: str, key: bytes) -> str:
    """Base64 of HMAC-SHA256 over the UTF-8 string to sign, as every Batch client computes it."""
    digest = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class _Canonicalizer:
    """Builds the candidate strings to sign for one request; the query is parsed once, pieces cached."""

    __slots__ = ("_req", "_account", "_pairs", "_py_tail", "_java_tail")

    def __init__(self, req: SignedRequest, account: str) -> None:
        self._req = req
        self._account = account
        # One parse serves both query forms. keep_blank_values so the Java form can see blank values;
        # the Python form drops them itself, as parse_qs does.
        self._pairs = parse_qsl(req.query_string, keep_blank_values=True)
        self._py_tail: tuple[list[str], str, str, str] | None = None
        self._java_tail: tuple[list[str], str, str, str] | None = None

    # --- the two client families ---------------------------------------------------------------------

    def _python_parts(self) -> tuple[list[str], str, str, str]:
        """Python 15.x/14.x: (standard header values, ocp block, path, query block)."""
        if self._py_tail is None:
            headers = self._req.headers
            values = [headers.get(name) or "" for name in _STANDARD_HEADERS]
            # `"ocp-" in name` is the SDK's test (it also picks up e.g. x-ocp-foo); blank values are skipped.
            ocp = "".join(
                f"{n}:{v}\n" for n, v in sorted((n, v) for n, v in headers.items() if "ocp-" in n and v)
            )
            # urlparse() splits ';params' off the last path segment; the SDK signs url.path without them.
            path = self._req.raw_path
            semi = path.find(";", path.rfind("/"))
            if semi >= 0:
                path = path[:semi]
            first: dict[str, str] = {}
            for name, value in self._pairs:
                if value:  # parse_qs drops blank values; the first remaining value wins
                    first.setdefault(name, value)
            query = "".join(f"\n{n}:{first[n]}" for n in sorted(first))
            self._py_tail = (values, ocp, path, query)
        return self._py_tail

    def _java_parts(self) -> tuple[list[str], str, str, str]:
        """Java azure-compute-batch: (standard header values, ocp block, path, query block)."""
        if self._java_tail is None:
            headers = self._req.headers
            values = [headers.get(name) or "" for name in _STANDARD_HEADERS]
            if "ocp-date" in headers:
                values[_DATE_INDEX] = ""  # "Cannot append both ocp-date and date header values"
            ocp = "".join(
                f"{n}:{headers[n].replace(chr(10), ' ').replace(chr(13), ' ').lstrip(' ')}\n"
                for n in sorted(n for n in headers if n.startswith("ocp-"))
            )
            path = "/" + self._req.raw_path.lstrip("/")
            last: dict[str, str] = {}
            for name, value in self._pairs:
                last[name.lower()] = value  # TreeMap.put: the last value wins, blanks included
            query = "".join(f"\n{n}:{last[n]}" for n in sorted(last))
            self._java_tail = (values, ocp, path, query)
        return self._java_tail

    # --- assembling ----------------------------------------------------------------------------------------

    def _content_lengths(self) -> list[str]:
        """Content-Length slot candidates: the Python rule first, then the value as received, then blank."""
        wire = self._req.headers.get("content-length") or ""
        python_rule = wire or ("" if self._req.method in _BODYLESS_METHODS else "0")
        out = [python_rule]
        if wire != python_rule:
            out.append(wire)
        if wire == "0":
            out.append("")  # signed before the transport added "Content-Length: 0"
        return out

    def _assemble(self, parts: tuple[list[str], str, str, str], account: str, content_length: str) -> str:
        values, ocp, path, query = parts
        if values[_CL_INDEX] != content_length:
            values = list(values)
            values[_CL_INDEX] = content_length
        return f"{self._req.method}\n" + "\n".join(values) + f"\n{ocp}/{account}{path}{query}"

    def primary(self) -> str:
        """The string the Python SDK (15.x, and 14.x over requests) signs for this request."""
        return self._assemble(self._python_parts(), self._account, self._content_lengths()[0])

    def expected(self) -> str:
        """The string the client that sent this request (told by its User-Agent) should have signed.

        Shown in the 403 so that a user with a wrong key can compare it with what their client signed.
        JavaScript (`@azure/batch`, ms-rest-js) signs like Python except the Content-Length slot: the header
        as set when signing, else ``0`` for a bodiless POST and blank for every other method. Java signs its
        own form with the account lowercased and the Content-Length as received.
        """
        agent = self._req.headers.get("user-agent", "").lower()
        wire = self._req.headers.get("content-length") or ""
        if "ms-rest-js" in agent or "azsdk-js" in agent:
            return self._assemble(
                self._python_parts(), self._account, wire or ("0" if self._req.method == "POST" else "")
            )
        if "azsdk-java" in agent:
            return self._assemble(self._java_parts(), self._account.lower(), wire)
        return self.primary()

    def variants(self) -> Iterator[str]:
        """Every candidate, primary first, each built only when the previous one has been rejected."""
        seen: set[str] = set()
        lengths = self._content_lengths()
        accounts = [self._account]
        if self._account.lower() != self._account:
            accounts.append(self._account.lower())
        # Python family with the account as given first; Java family with the account lowercased first.
        for parts_of, family_accounts in (
            (self._python_parts, accounts),
            (self._java_parts, accounts[::-1]),
        ):
            for account in family_accounts:
                for content_length in lengths:
                    candidate = self._assemble(parts_of(), account, content_length)
                    if candidate not in seen:
                        seen.add(candidate)
                        yield candidate


def string_to_sign_variants(req: SignedRequest, account: str) -> list[str]:
    """All deduplicated strings to sign real clients may have produced for `req`, the Python SDK's first.

    `account` is the account name as written in the Authorization header.
    """
    return list(_Canonicalizer(req, account).variants())


# --- verification -------------------------------------------------------------------------------------------


def _parse_authorization(value: str) -> tuple[str, str]:
    """Split ``SharedKey <account>:<signature>``; anything else is a format error (400)."""
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        raise errors.invalid_authentication_info(
            "Bearer (Microsoft Entra ID) authentication is not supported by this server; use SharedKey."
        )
    if scheme.lower() != "sharedkey":
        raise errors.invalid_authentication_info(
            "The Authorization header must have the form 'SharedKey <AccountName>:<Signature>'."
        )
    account, sep, signature = credentials.strip().partition(":")
    if not sep or not account or not signature or any(c.isspace() for c in account + signature):
        raise errors.invalid_authentication_info(
            "The Authorization header must have the form 'SharedKey <AccountName>:<Signature>'."
        )
    return account, signature


def _find_account(accounts: Mapping[str, bytes], name: str) -> tuple[str, bytes] | None:
    """Exact match first; Batch account names are lowercase, so fall back to a case-insensitive one."""
    key = accounts.get(name)
    if key is not None:
        return name, key
    folded = name.lower()
    for known, known_key in accounts.items():
        if known.lower() == folded:
            return known, known_key
    return None


def _request_time(headers: Mapping[str, str]) -> tuple[str, str, datetime]:
    """(header name, raw value, parsed UTC time); ocp-date wins over Date, as the Batch docs specify."""
    name = "ocp-date" if headers.get("ocp-date") else "date" if headers.get("date") else ""
    if not name:
        raise errors.missing_required_header("ocp-date")
    raw = headers[name]
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        # Storage-family wording; the Batch front end answers auth problems with 403 AuthenticationFailed.
        raise errors.authentication_failed(f"The {name} header in the request is incorrect.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return name, raw, when


def _check_skew(name: str, raw: str, when: datetime, now: datetime, max_skew: timedelta) -> None:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if abs(now - when) <= max_skew:
        return
    minutes = max_skew.total_seconds() / 60
    window = f"{minutes:g} minutes" if minutes != 1 else "1 minute"
    relation = "too old" if when < now else "too far in the future"
    raise errors.authentication_failed(
        f"Request {name} header {relation}: '{raw}'. The request time is outside the allowed window of "
        f"+/- {window} of the server time."
    )


def _signature_mismatch(primary: str) -> BatchError:
    # The real service also echoes the received signature; we deliberately do not.
    return errors.authentication_failed(
        "The MAC signature found in the HTTP request is not the same as any computed signature. "
        f"Server used following string to sign: '{primary}'."
    )


def verify_shared_key(
    req: SignedRequest, accounts: Mapping[str, bytes], now: datetime, max_skew: timedelta
) -> str:
    """Authenticate `req` against `accounts` (name -> decoded key); return the account name or raise.

    Order: header present (401) -> header well-formed (400) -> known account (403) -> date present (400)
    and within `max_skew` of `now` (403) -> signature matches some variant (403). Error details never
    contain the key or the received signature.
    """
    authorization = req.headers.get("authorization")
    if authorization is None or not authorization.strip():
        raise errors.missing_authentication()
    account_as_sent, signature = _parse_authorization(authorization)

    found = _find_account(accounts, account_as_sent)
    if found is None:
        raise errors.authentication_failed("The account named in the Authorization header is not known.")
    account, key = found

    name, raw, when = _request_time(req.headers)
    _check_skew(name, raw, when, now, max_skew)

    received = signature.encode("utf-8")
    canon = _Canonicalizer(req, account_as_sent)
    for candidate in canon.variants():
        if hmac.compare_digest(compute_signature(candidate, key).encode("ascii"), received):
            return account
    raise _signature_mismatch(canon.expected())
