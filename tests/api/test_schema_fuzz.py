"""A bounded schema fuzz with schemathesis against the official Batch OpenAPI spec (2024-07-01.20.0).

Every one of the spec's 77 operations gets generated requests (positive: valid against the spec; negative:
deliberately invalid), Shared Key signed, sent to a live server. Read operations are also tried on the real
pool, node, job, task and file, so their 200 answers are validated too. Checks:

* never a 5xx, except 501 NotImplemented for an operation this server does not implement (decision 0003);
* for the operations implemented, every answer (success or Batch error) conforms to the spec's schema and
  declares the spec's content type.

Bounded and deterministic: a fixed number of examples per operation and mode, hypothesis derandomized, no
shrinking, no example database. All failures are collected and reported together, one line per finding.

Where the spec and the real service disagree, the service wins: see SERVICE_WINS below, the one place the
fuzz is told so (evidence: shared/reference/golden-recordings/ANALYSIS.md).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

schemathesis = pytest.importorskip("schemathesis")

import requests  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.core import NOT_SET  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

from batchyard.api.shared_key import SignedRequest, compute_signature, string_to_sign_variants  # noqa: E402
from tests.support.live import LiveServer, wait_for  # noqa: E402
from tests.support.raw import Raw, pool_body  # noqa: E402
from tests.support.reference import SPEC, SPEC_SHA256, reference_file  # noqa: E402

pytestmark = pytest.mark.slow

API_VERSION = "2024-07-01.20.0"
# Examples per operation and generation mode; BATCHYARD_FUZZ_EXAMPLES raises it for a longer local run.
EXAMPLES = int(os.environ.get("BATCHYARD_FUZZ_EXAMPLES", "8"))


# --- SERVICE_WINS: where the real service and the spec disagree, the spec is bent to the service ---------------
#
# Each entry is backed by the golden recordings of the real service (ANALYSIS.md, numbered as there):
#  * §7 / §11: file `contentLength` is sent as a JSON string ("contentLength": "1234"), the spec says int64;
#  * §6: `nodeFillType` comes back PascalCase (`Spread`, `Pack`), addtaskcollection `status` is `Success` /
#    `ClientError` / `ServerError`, `nodePlacementConfiguration.policy` is `Zonal`, osDisk `caching` is
#    `ReadWrite` / `ReadOnly`; the spec's enums are lowercase;
#  * §7 / §8: durations are .NET TimeSpans in ISO 8601 form with up to 7 fraction digits and days as the
#    largest unit (`P10675199DT2H48M5.4775807S` is TimeSpan.MaxValue, the "infinite" default; `PT15M`,
#    `P7D`); JSON Schema's `duration` format allows no fractions, so `format: duration` becomes this pattern
#    (which also makes the positive fuzz send realistic durations);
#  * §2 / §11: file content (`GET .../files/{filePath}`) is served raw with the file's own type (`text/plain`
#    for stdout.txt), not the spec's application/json or octet-stream: no content-type check on file reads;
#  * rest_api.md §1.7: a failed precondition on a read is a bodiless 304 (not in the spec's responses), so
#    bodiless 304 and HEAD answers are not parsed against the spec's JSON schemas;
#  * §2: bodiless answers (201/202/204, HEAD, 200 on PUT/PATCH) carry no Content-Type; the content-type
#    check is only applied to answers with a body (see `check_answer`).
# Everything else the fuzz reports is the server's to fix.

# (definition or "*" for any, property) -> the casings the service answers with, besides the spec's
SERVICE_ENUMS = {
    ("*", "nodeFillType"): ["Spread", "Pack"],
    ("TaskAddResult", "status"): ["Success", "ClientError", "ServerError"],
    ("*", "policy"): ["Zonal", "Regional"],
    ("*", "caching"): ["None", "ReadOnly", "ReadWrite"],
    ("*", "securityType"): ["trustedlaunch", "confidentialvm"],
}


_D, _H, _M, _S = r"\d{1,8}D", r"\d{1,2}H", r"\d{1,2}M", r"\d{1,2}(\.\d{1,7})?S"
DURATION = rf"^P({_D}(T({_H})?({_M})?({_S})?)?|T({_H}({_M})?({_S})?|{_M}({_S})?|{_S}))$"


def _durations(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("format") == "duration":
            del node["format"]
            node["pattern"] = DURATION
        for v in node.values():
            _durations(v)
    elif isinstance(node, list):
        for v in node:
            _durations(v)


def service_wins(spec: dict[str, Any]) -> dict[str, Any]:
    defs = spec["definitions"]
    _durations(spec)
    defs["FileProperties"]["properties"]["contentLength"] = {"type": "string"}
    for name, d in defs.items():
        for prop, schema in d.get("properties", {}).items():
            extra = SERVICE_ENUMS.get((name, prop)) or SERVICE_ENUMS.get(("*", prop))
            if extra is None:
                continue
            target = defs[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema
            if "enum" in target:
                target["enum"] = list(dict.fromkeys([*target["enum"], *extra]))
    return spec


# --- how the spec is pointed at this server (not disagreements: plumbing) -------------------------------------


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    spec.pop("x-ms-parameterized-host", None)  # {batchUrl} is the base URL, given to schemathesis directly
    spec["schemes"] = ["http"]
    spec.pop("security", None)  # Shared Key is added by the session (below), not generated
    spec.pop("securityDefinitions", None)
    # every request names the api-version this spec describes
    spec["parameters"]["ApiVersionParameter"]["enum"] = [API_VERSION]
    _rfc1123(spec)  # hypothesis has no generator for this format: give it the shape
    # ids: the spec states the rule only in prose; a pattern lets positive creates reach past the id check
    for name in ("PoolAddParameter", "JobAddParameter", "TaskAddParameter", "JobScheduleAddParameter"):
        spec["definitions"][name]["properties"]["id"]["pattern"] = r"^[A-Za-z0-9_-]{1,64}$"
    return service_wins(spec)


RFC1123 = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (0[1-9]|[12][0-9]|3[01]) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
    r"Nov|Dec) (19[7-9][0-9]|20[0-9][0-9]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] GMT$"
)


def _rfc1123(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("format") == "date-time-rfc1123" and node.get("in") == "header":
            node["pattern"] = RFC1123
        for v in node.values():
            _rfc1123(v)
    elif isinstance(node, list):
        for v in node:
            _rfc1123(v)


def closed(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec for *generating* requests: no undeclared properties, which the server refuses (400
    UnsupportedProperty) before looking at anything else, so open objects would only test that one check.
    Answers are validated against the open spec."""
    spec = copy.deepcopy(spec)
    for d in spec["definitions"].values():
        if d.get("type", "object") == "object" and "properties" in d and "allOf" not in d:
            d["type"] = "object"  # some definitions omit it, and then any JSON value is generated
            d.setdefault("additionalProperties", False)
    # the spec leaves it optional because of the retired cloudServiceConfiguration; a pool needs one
    spec["definitions"]["PoolAddParameter"].setdefault("required", []).append("virtualMachineConfiguration")
    return spec


# --- signing ----------------------------------------------------------------------------------------------------


class SharedKey(requests.auth.AuthBase):
    """Signs the prepared request exactly as sent (after schemathesis and requests set every header)."""

    def __init__(self, account: str, key_b64: str) -> None:
        self.account = account
        self.key = base64.b64decode(key_b64)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        # generated ocp-date/Authorization values would only test the clock check; the auth tests do that
        r.headers["ocp-date"] = format_datetime(datetime.now(UTC), usegmt=True)
        parts = urlsplit(r.url or "")
        headers = {k.lower(): str(v) for k, v in r.headers.items()}
        req = SignedRequest(str(r.method), parts.path, parts.query, headers)
        sig = compute_signature(string_to_sign_variants(req, self.account)[0], self.key)
        r.headers["Authorization"] = f"SharedKey {self.account}:{sig}"
        return r


# --- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Findings:
    lines: list[str] = field(default_factory=list)
    requests: int = 0
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, label: str, msg: str) -> None:
        self.lines.append(f"{label}: {msg}")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    path = reference_file(SPEC, SPEC_SHA256)
    return prepare(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def real_ids(live: LiveServer) -> Iterator[dict[str, str]]:
    """A pool with one node, a job and a completed task: real ids for the read operations."""
    raw = Raw(live)
    pool = "fuzz-" + uuid.uuid4().hex[:6]
    assert raw.post("/pools", pool_body(pool, 1)).status_code == 201
    node = wait_for(
        lambda: [n["id"] for n in raw.json(f"/pools/{pool}/nodes")["value"] if n["state"] == "idle"],
        60,
        0.1,
        "a node",
    )[0]
    job, task = "fuzz-job", "fuzz-task"
    assert raw.post("/jobs", {"id": job, "poolInfo": {"poolId": pool}}).status_code == 201
    assert raw.post(f"/jobs/{job}/tasks", {"id": task, "commandLine": "/bin/echo hi"}).status_code == 201
    wait_for(lambda: raw.json(f"/jobs/{job}/tasks/{task}")["state"] == "completed", 60, 0.1, "the task")
    files = raw.json(f"/pools/{pool}/nodes/{node}/files", params={"recursive": "true"})["value"]
    node_file = next(f["name"] for f in files if f["name"].endswith(f"{task}/stdout.txt"))
    yield {"poolId": pool, "nodeId": node, "jobId": job, "taskId": task, "filePath": node_file}
    for p in raw.json("/pools")["value"]:
        raw.delete(f"/pools/{p['id']}")
    wait_for(lambda: not raw.json("/pools")["value"], 60, 0.1, "pools to be deleted")


def clamp_nodes(body: Any) -> Any:
    """Generated pools get no nodes: node quotas are tested on their own (issue 7 item 4), and a fuzz that
    spawns agents by the thousand would measure the host, not the API. Negative counts stay (to be refused)."""
    if isinstance(body, dict):
        out = {}
        for k, v in body.items():
            if k.startswith("target") and k.endswith("Nodes") and type(v) is int:
                out[k] = min(v, 0)
            else:
                out[k] = clamp_nodes(v)
        return out
    if isinstance(body, list):
        return [clamp_nodes(v) for v in body]
    return body


def check_answer(case: Any, vop: Any, resp: requests.Response, findings: Findings, tag: str) -> None:
    """Record the answer and what is wrong with it; `vop` is the operation in the open (validation) spec."""
    label = f"{case.operation.method.upper()} {case.operation.path} [{tag}]"
    findings.requests += 1
    code = ""
    if resp.status_code >= 400 and resp.content:
        try:
            code = str(resp.json().get("code"))
        except ValueError:
            code = "(not JSON)"
    key = f"{resp.status_code} {code}".strip()
    st = findings.statuses.setdefault(case.operation.label, {})
    st[key] = st.get(key, 0) + 1
    sent = f"{resp.request.method} {unquote(resp.request.path_url)[:160]}"
    if resp.status_code == 501:
        if code not in ("NotImplemented", ""):
            findings.add(label, f"501 with code {code!r} for {sent}")
        return
    if resp.status_code >= 500:
        body = str(case.body)[:200] if isinstance(case.body, dict | list) else ""
        findings.add(label, f"{resp.status_code} for {sent} body={body!r} -> {resp.text[:200]!r}")
        return
    if not resp.content and (resp.status_code == 304 or resp.request.method == "HEAD"):
        return
    checks = [response_schema_conformance]
    if resp.content and not case.operation.path.endswith("/files/{filePath}"):
        checks.append(content_type_conformance)
    vcase = vop.Case(
        path_parameters=case.path_parameters,
        query=case.query,
        headers=dict(case.headers or {}),
        body=case.body,
        media_type=case.media_type,
    )
    try:
        vcase.validate_response(resp, checks=checks)
    except BaseExceptionGroup as group:  # schemathesis raises its check failures as one group
        for f in group.exceptions:
            what = " ".join(f"{getattr(f, 'title', '')}: {getattr(f, 'message', f)}".split())[:400]
            findings.add(label, f"{resp.status_code} does not conform for {sent}: {what}")
    except AssertionError as exc:
        what = " ".join(str(exc).split())[:400]
        findings.add(label, f"{resp.status_code} does not conform for {sent}: {what}")


@dataclass
class Fuzz:
    session: requests.Session
    validation: Any  # the open schema
    real_ids: dict[str, str]
    findings: Findings

    def send(self, case: Any, mode: GenerationMode) -> None:
        if isinstance(case.body, dict | list):
            case.body = clamp_nodes(case.body)
        op = case.operation
        vop = self.validation[op.path][op.method.upper()]
        check_answer(case, vop, case.call(session=self.session, timeout=30), self.findings, mode.value)
        # reads are tried once more on the real entities, so their 200 answers are validated too
        names = {p.name for p in op.path_parameters}
        if op.method in ("get", "head") and names and names <= set(self.real_ids) and mode.is_positive:
            ids = dict(self.real_ids)
            if "taskId" in names:
                ids["filePath"] = "stdout.txt"
            case.path_parameters = {n: ids[n] for n in names}
            resp = case.call(session=self.session, timeout=30)
            check_answer(case, vop, resp, self.findings, "real ids")

    def operation(self, op: Any, mode: GenerationMode) -> None:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            self.send(case, mode)

        run()


def test_schema_fuzz(live: LiveServer, spec: dict[str, Any], real_ids: dict[str, str]) -> None:
    generation = schemathesis.openapi.from_dict(closed(spec))
    generation.config.update(base_url=live.endpoint)
    validation = schemathesis.openapi.from_dict(spec)
    validation.config.update(base_url=live.endpoint)
    session = requests.Session()
    session.auth = SharedKey(live.account, live.key)
    fuzz = Fuzz(session, validation, real_ids, Findings())
    started = time.monotonic()
    for result in generation.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz.operation(result.ok(), mode)

    findings = fuzz.findings
    took = time.monotonic() - started
    print(f"\nschema fuzz: {findings.requests} requests in {took:.0f}s")
    for label, st in sorted(findings.statuses.items()):
        print(f"  {label}: {dict(sorted(st.items()))}")
    assert live.proc is not None and live.proc.poll() is None, "the server died during the fuzz"
    assert not findings.lines, f"{len(findings.lines)} findings:\n" + "\n".join(sorted(set(findings.lines)))


def test_known_good_writes_conform(live: LiveServer, spec: dict[str, Any]) -> None:
    """Random bodies rarely pass the server's checks, so the implemented writes are also driven once with
    valid requests, in order, and each 2xx answer (headers, taskaddresult body) is validated against the spec."""
    validation = schemathesis.openapi.from_dict(spec)
    validation.config.update(base_url=live.endpoint)
    session = requests.Session()
    session.auth = SharedKey(live.account, live.key)
    findings = Findings()
    pool, job = "kg-" + uuid.uuid4().hex[:6], "kg-job-" + uuid.uuid4().hex[:6]
    q = {"api-version": API_VERSION}
    steps: list[tuple[str, str, dict[str, str], Any, int]] = [
        ("POST", "/pools", {}, pool_body(pool, 0), 201),
        ("PATCH", "/pools/{poolId}", {"poolId": pool}, {"metadata": [{"name": "a", "value": "b"}]}, 200),
        ("POST", "/pools/{poolId}/resize", {"poolId": pool}, {"targetDedicatedNodes": 0}, 202),
        ("POST", "/pools/{poolId}/stopresize", {"poolId": pool}, None, 202),
        ("POST", "/jobs", {}, {"id": job, "poolInfo": {"poolId": pool}}, 201),
        ("PATCH", "/jobs/{jobId}", {"jobId": job}, {"priority": 5}, 200),
        ("POST", "/jobs/{jobId}/tasks", {"jobId": job}, {"id": "t1", "commandLine": "/bin/true"}, 201),
        (
            "POST",
            "/jobs/{jobId}/addtaskcollection",
            {"jobId": job},
            {"value": [{"id": "t2", "commandLine": "/bin/true"}, {"id": "t1", "commandLine": "/bin/true"}]},
            200,
        ),
        ("POST", "/jobs/{jobId}/tasks/{taskId}/terminate", {"jobId": job, "taskId": "t2"}, None, 204),
        ("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate", {"jobId": job, "taskId": "t2"}, None, 204),
        ("DELETE", "/jobs/{jobId}/tasks/{taskId}", {"jobId": job, "taskId": "t2"}, None, 200),
        ("POST", "/jobs/{jobId}/disable", {"jobId": job}, {"disableTasks": "requeue"}, 202),
        ("POST", "/jobs/{jobId}/enable", {"jobId": job}, None, 202),
        ("POST", "/jobs/{jobId}/terminate", {"jobId": job}, {"terminateReason": "done"}, 202),
        ("DELETE", "/jobs/{jobId}", {"jobId": job}, None, 202),
        ("DELETE", "/pools/{poolId}", {"poolId": pool}, None, 202),
    ]
    for method, path, params, body, status in steps:
        vop = validation[path][method]
        case = vop.Case(path_parameters=params, query=dict(q), body=body if body is not None else NOT_SET)
        resp = case.call(session=session, timeout=30)
        if resp.status_code != status:
            findings.add(f"{method} {path}", f"expected {status}, got {resp.status_code}: {resp.text[:200]}")
            continue
        check_answer(case, vop, resp, findings, "known good")
        if path.endswith("/addtaskcollection"):
            statuses = sorted(r["status"] for r in resp.json()["value"])
            if statuses != ["ClientError", "Success"]:
                findings.add(f"{method} {path}", f"per-task statuses {statuses}")
    assert not findings.lines, "\n".join(findings.lines)
