"""`az batch application summary list/show` (azure-cli 2.91.0) read packages uploaded with `batchyard app`."""

from __future__ import annotations

import pytest

from tests.conformance.test_application_packages import app_cli, upload
from tests.conformance.test_az_tutorial import Az, az  # noqa: F401
from tests.support.live import LiveServer

pytestmark = pytest.mark.az


def test_az_application_summary(
    az: Az,  # noqa: F811
    live: LiveServer,
    uid: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    app = f"azapp-{uid}"
    tmp = tmp_path_factory.mktemp("zips")
    upload(live, tmp, app, "1.0", {"a.txt": b"a"})
    upload(live, tmp, app, "1.1", {"a.txt": b"b"}, "--set-default")
    listed = az.json("batch", "application", "summary", "list")
    mine = [a for a in listed if a["id"] == app]
    assert len(mine) == 1 and sorted(mine[0]["versions"]) == ["1.0", "1.1"], listed
    shown = az.json("batch", "application", "summary", "show", "--application-id", app)
    assert (shown["id"], shown["displayName"], sorted(shown["versions"])) == (app, app, ["1.0", "1.1"])
    app_cli(live, "delete", app)
    missing = az.run(
        "batch", "application", "summary", "show", "--application-id", app, rc=3
    )  # az: 3 = resource not found
    assert "ApplicationNotFound" in missing.stderr + missing.stdout
