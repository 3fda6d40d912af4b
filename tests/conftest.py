"""Shared fixtures: a live server per test module, the official SDK client, PostgreSQL in CI."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer

PG_URL = os.environ.get("BATCHYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=3):
            return True
    except Exception:
        return False


def require_pg() -> None:
    """PostgreSQL tests run in CI and fail loudly there when the server is missing."""
    if not pg_available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but {PG_URL} is not reachable")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("srv")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(live: LiveServer):  # type: ignore[no-untyped-def]
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    return BatchClient(endpoint=live.endpoint, credential=AzureNamedKeyCredential(live.account, live.key))


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """Code under test may set the process umask (a local provider hardening its data dir sets 077): the next
    test starts with the umask the suite started with, whatever ran before it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A fresh world-writable, sticky directory under /tmp instead of pytest's (root's, 0700) temp dirs.

    Tests pass files between themselves and their tasks (pid files, markers, data dirs); run as root, tasks
    run as their node's own user (decision 0010) and could not reach pytest's temp dirs.
    """
    d = Path(tempfile.mkdtemp(prefix="batchyard-test-", dir="/tmp"))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
