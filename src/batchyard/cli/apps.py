"""`batchyard app ...`: manage application packages on a server through its ``/batchyard/applications`` API.

A client like any other: it needs the endpoint, account and key (options, or ``BATCHYARD_ENDPOINT``,
``BATCHYARD_ACCOUNT_NAME``, ``BATCHYARD_ACCOUNT_KEY``; the development account by default) and signs every
request with Shared Key. Answers are printed as JSON; a refused request prints the Batch error and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants
from batchyard.cli.main import DEV_ACCOUNT, DEV_KEY
from batchyard.models.versions import NEWEST

_UPLOAD_CHUNK = 1 << 20


class Client:
    def __init__(self, endpoint: str, account: str, key: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.account = account
        try:
            self.key = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise SystemExit("batchyard app: the account key must be base64") from None
        self.http = httpx.Client(timeout=httpx.Timeout(30.0, read=600.0))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] = b"",
        length: int | None = None,
        ctype: str = "",
    ) -> httpx.Response:
        query = f"api-version={NEWEST}"
        raw_path = urlsplit(self.endpoint).path.rstrip("/") + path
        headers = {"ocp-date": formatdate(usegmt=True)}
        size = len(body) if isinstance(body, bytes) else length
        if method not in ("GET", "HEAD"):
            headers["content-length"] = str(size or 0)
        if ctype:
            headers["content-type"] = ctype
        req = SignedRequest(method=method, raw_path=raw_path, query_string=query, headers=headers)
        sig = compute_signature(string_to_sign_variants(req, self.account)[0], self.key)
        headers["authorization"] = f"SharedKey {self.account}:{sig}"
        url = f"{self.endpoint}{path}?{query}"
        try:
            return self.http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise SystemExit(f"batchyard app: cannot reach {self.endpoint}: {e}") from None


def _app(app_id: str) -> str:
    return "/batchyard/applications/" + quote(app_id, safe="")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_UPLOAD_CHUNK):
            yield chunk


def _show(resp: httpx.Response, ok: tuple[int, ...] = (200, 201)) -> Any:
    if resp.status_code not in ok:
        try:
            err = resp.json()
            msg = err.get("message", {})
            text = msg.get("value", "").split("\n")[0] if isinstance(msg, dict) else str(msg)
            values = {v.get("key"): v.get("value") for v in err.get("values") or []}
            detail = f" {json.dumps(values)}" if values else ""
            print(f"batchyard app: {resp.status_code} {err.get('code')}: {text}{detail}", file=sys.stderr)
        except (ValueError, AttributeError):
            print(f"batchyard app: HTTP {resp.status_code}", file=sys.stderr)
        raise SystemExit(1)
    if resp.content:
        print(json.dumps(resp.json(), indent=2))
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchyard app", description="Manage application packages on a server.")
    p.add_argument("--endpoint", default=os.environ.get("BATCHYARD_ENDPOINT", "http://127.0.0.1:8580"))
    p.add_argument("--account", default=os.environ.get("BATCHYARD_ACCOUNT_NAME", DEV_ACCOUNT))
    p.add_argument("--key", default=os.environ.get("BATCHYARD_ACCOUNT_KEY", DEV_KEY))
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list applications and their packages")
    s = sub.add_parser("show", help="show one application")
    s.add_argument("app")
    s = sub.add_parser("create", help="create an application (or update its settings)")
    s.add_argument("app")
    s.add_argument("--display-name")
    s.add_argument("--allow-updates", choices=["true", "false"])
    s = sub.add_parser("upload", help="upload a package version (a .zip)")
    s.add_argument("app")
    s.add_argument("version")
    s.add_argument("zip", type=Path)
    s.add_argument("--set-default", action="store_true", help="make this version the default")
    s = sub.add_parser("set-default", help="set the application's default version")
    s.add_argument("app")
    s.add_argument("version")
    s = sub.add_parser("delete", help="delete an application, or one package version of it")
    s.add_argument("app")
    s.add_argument("--version", help="delete only this version")
    return p


def main(argv: list[str]) -> None:
    a = _parser().parse_args(argv)
    c = Client(a.endpoint, a.account, a.key)
    if a.cmd == "list":
        _show(c.request("GET", "/batchyard/applications"))
    elif a.cmd == "show":
        _show(c.request("GET", _app(a.app)))
    elif a.cmd == "create":
        spec: dict[str, Any] = {}
        if a.display_name is not None:
            spec["displayName"] = a.display_name
        if a.allow_updates is not None:
            spec["allowUpdates"] = a.allow_updates == "true"
        _show(c.request("PUT", _app(a.app), json.dumps(spec).encode(), ctype="application/json"))
    elif a.cmd == "upload":
        if not a.zip.is_file():
            raise SystemExit(f"batchyard app: {a.zip} is not a file")
        path = f"{_app(a.app)}/versions/{quote(a.version, safe='')}"
        resp = c.request("PUT", path, _file_chunks(a.zip), a.zip.stat().st_size, "application/zip")
        if a.set_default and resp.status_code in (200, 201):
            body = json.dumps({"defaultVersion": a.version}).encode()
            resp = c.request("PATCH", _app(a.app), body, ctype="application/json")
        _show(resp)
    elif a.cmd == "set-default":
        body = json.dumps({"defaultVersion": a.version}).encode()
        _show(c.request("PATCH", _app(a.app), body, ctype="application/json"))
    elif a.cmd == "delete":
        path = _app(a.app) + (f"/versions/{quote(a.version, safe='')}" if a.version else "")
        _show(c.request("DELETE", path))
