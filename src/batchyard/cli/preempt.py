"""`batchyard preempt`: preempt low-priority nodes of a running server (a batchyard extension, decision 0101).

    batchyard preempt POOL NODE_ID...          preempt named nodes
    batchyard preempt POOL --fraction 0.25     preempt a random quarter of the pool's low-priority nodes
    batchyard preempt POOL --rate 6            preempt at random, 6 times per node-hour (0 turns it off)

It signs its requests with the account's Shared Key like any Batch client (`AZURE_BATCH_ENDPOINT`,
`AZURE_BATCH_ACCOUNT`, `AZURE_BATCH_ACCESS_KEY`, as `az batch` reads them).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants

API_VERSION = "2025-06-01"


def _request(endpoint: str, account: str, key: bytes, method: str, path: str, body: Any) -> Any:
    data = json.dumps(body).encode()
    query = f"api-version={API_VERSION}"
    headers = {
        "ocp-date": formatdate(usegmt=True),
        "content-type": "application/json; odata=minimalmetadata",
        "content-length": str(len(data)),
    }
    base = urlsplit(endpoint)
    raw_path = (base.path.rstrip("/") + quote(path)) or "/"
    sreq = SignedRequest(method=method, raw_path=raw_path, query_string=query, headers=headers)
    signature = compute_signature(string_to_sign_variants(sreq, account)[0], key)
    headers["authorization"] = f"SharedKey {account}:{signature}"
    url = f"{endpoint.rstrip('/')}{quote(path)}?{query}"
    resp = httpx.request(method, url, content=data, headers=headers, timeout=30)
    try:
        out = resp.json()
    except ValueError:
        out = {"text": resp.text}
    if resp.status_code >= 400:
        err = out.get("message", {}).get("value", "").split("\n")[0] if isinstance(out, dict) else ""
        values = {v["key"]: v["value"] for v in out.get("values") or []} if isinstance(out, dict) else {}
        sys.exit(f"batchyard preempt: {resp.status_code} {out.get('code', '')} {err} {values or ''}".rstrip())
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="batchyard preempt", description="Preempt low-priority nodes (batchyard only)."
    )
    p.add_argument("pool_id")
    p.add_argument("node_ids", nargs="*", help="nodes to preempt")
    p.add_argument("--fraction", type=float, help="preempt this fraction of the pool's low-priority nodes")
    p.add_argument("--count", type=int, help="preempt this many of the pool's low-priority nodes")
    p.add_argument("--rate", type=float, help="random preemptions per node-hour from now on (0 = off)")
    p.add_argument("--return-after", default=None, help="ISO 8601 duration before a node comes back (PT10S)")
    p.add_argument("--endpoint", default=os.environ.get("AZURE_BATCH_ENDPOINT", "http://127.0.0.1:8580"))
    p.add_argument("--account", default=os.environ.get("AZURE_BATCH_ACCOUNT", "devbatchaccount1"))
    a = p.parse_args(argv)
    key_text = os.environ.get("AZURE_BATCH_ACCESS_KEY")
    if not key_text:
        from batchyard.cli.main import DEV_KEY

        key_text = DEV_KEY
    try:
        key = base64.b64decode(key_text, validate=True)
    except ValueError:
        sys.exit("batchyard preempt: AZURE_BATCH_ACCESS_KEY is not base64")
    modes = sum(x is not None for x in (a.fraction, a.count, a.rate)) + bool(a.node_ids)
    if modes != 1:
        sys.exit("batchyard preempt: give node ids, or one of --fraction, --count, --rate")
    extra = {"returnAfter": a.return_after} if a.return_after else {}
    x = f"/batchyard/pools/{a.pool_id}"
    if a.rate is not None:
        out = _request(
            a.endpoint, a.account, key, "PUT", x + "/chaos", {"preemptionsPerNodeHour": a.rate, **extra}
        )
        print(json.dumps(out))
        return
    if a.node_ids:
        done: list[str] = []
        for nid in a.node_ids:
            done += _request(a.endpoint, a.account, key, "POST", f"{x}/nodes/{nid}/preempt", extra)[
                "preempted"
            ]
        print(json.dumps({"poolId": a.pool_id, "preempted": done}))
        return
    body: dict[str, Any] = {"fraction": a.fraction} if a.fraction is not None else {"count": a.count}
    print(json.dumps(_request(a.endpoint, a.account, key, "POST", x + "/preempt", {**body, **extra})))
