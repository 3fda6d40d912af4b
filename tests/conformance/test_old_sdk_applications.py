"""Older azure-batch releases (msrest clients, api-versions 2018-12-01.8.0 .. 2024-02-01.19.0) read applications
with their own `client.application.list()` / `.get()`, and get `ApplicationNotFound` for a missing one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.test_application_packages import upload
from tests.conformance.test_old_sdks import RELEASES, _python
from tests.support.live import LiveServer

READ = r"""
import json, sys
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials
from azure.batch.models import BatchErrorException

endpoint, account, key, app = sys.argv[1:5]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
listed = {a.id: sorted(a.versions) for a in client.application.list()}
got = client.application.get(app)
try:
    client.application.get("no-such-app")
    missing = None
except BatchErrorException as e:
    missing = e.error.code
print(json.dumps({"listed": listed, "got": [got.id, got.display_name, sorted(got.versions)], "missing": missing}))
"""


@pytest.fixture(scope="module")
def app(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = "oldsdk-app"
    tmp = tmp_path_factory.mktemp("zips")
    upload(live, tmp, name, "1.0", {"a.txt": b"a"})
    upload(live, tmp, name, "2.0", {"a.txt": b"b"}, "--set-default")
    yield name


@pytest.mark.parametrize("release", list(RELEASES))
def test_old_sdk_reads_applications(live: LiveServer, app: str, release: str) -> None:
    py: Path = _python(release)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(py), "-c", READ, live.endpoint, live.account, live.key, app],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, f"azure-batch {release}:\n{proc.stderr[-4000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["listed"] == {app: ["1.0", "2.0"]}
    assert got["got"] == [app, app, ["1.0", "2.0"]]
    assert got["missing"] == "ApplicationNotFound"
