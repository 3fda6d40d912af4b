"""A real Azurite (the Azure Storage emulator), blob service only, for the storage tests.

`scripts/azurite-deps` installs the pinned Azurite with npm into ``.azurite/`` in the repo root. `Azurite.start`
runs it on a free port with a temporary data directory (``--skipApiVersionCheck --loose``) and waits until it
answers; `stop` ends it. Without an installation the tests skip, except under ``CI=true``, where they fail.
SAS tokens are made with the storage SDK, the way users make them, using Azurite's well-known account key.
Azurite's access log (its stdout) is kept so tests can count the requests that reached storage.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same for every installation; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def require_azurite() -> Path:
    """The Azurite executable; skip without it, fail under CI=true."""
    if AZURITE_BIN.exists():
        return AZURITE_BIN
    msg = f"Azurite is not installed at {AZURITE_BIN}; run scripts/azurite-deps"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Azurite:
    """One Azurite blob service on 127.0.0.1:<port>, data in ``workdir``."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / "access.log"

    def start(self, timeout: float = 60.0) -> Azurite:
        exe = require_azurite()
        self.port = free_port()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [
                str(exe),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(data),
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    # --- what users do with the SDK ------------------------------------------------------------------------

    def service(self):  # type: ignore[no-untyped-def]
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str, blobs: dict[str, bytes] | None = None) -> None:
        cc = self.service().create_container(name)
        for blob, data in (blobs or {}).items():
            cc.upload_blob(blob, data, overwrite=True)

    def put_blob(self, container: str, blob: str, data: bytes) -> None:
        self.service().get_container_client(container).upload_blob(blob, data, overwrite=True)

    def read_blob(self, container: str, blob: str) -> bytes:
        data: bytes = self.service().get_container_client(container).download_blob(blob).readall()
        return data

    def blob_names(self, container: str) -> list[str]:
        return sorted(b.name for b in self.service().get_container_client(container).list_blobs())

    def container_sas_url(
        self, container: str, permission: str = "rl", expiry: timedelta = timedelta(hours=1)
    ) -> str:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        sas = generate_container_sas(
            ACCOUNT,
            container,
            account_key=KEY,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + expiry,
            start=datetime.now(UTC) - timedelta(minutes=5),
        )
        return f"{self.blob_endpoint}/{container}?{sas}"

    def blob_sas_url(
        self, container: str, blob: str, permission: str = "r", expiry: timedelta = timedelta(hours=1)
    ) -> str:
        from urllib.parse import quote

        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        sas = generate_blob_sas(
            ACCOUNT,
            container,
            blob,
            account_key=KEY,
            permission=BlobSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + expiry,
            start=datetime.now(UTC) - timedelta(minutes=5),
        )
        return f"{self.blob_endpoint}/{container}/{quote(blob)}?{sas}"

    def wait_log_entries(
        self, method: str, path_contains: str, at_least: int, timeout: float = 10.0
    ) -> list[tuple[int, int]]:
        """`log_entries` once there are ``at_least`` of them (Azurite writes its log after responding)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.log_entries(method, path_contains)
            if len(entries) >= at_least or time.monotonic() > deadline:
                return entries
            time.sleep(0.02)

    def log_entries(self, method: str, path_contains: str) -> list[tuple[int, int]]:
        """``(status, body bytes)`` of each logged ``method`` request whose path contains ``path_contains``."""
        pat = re.compile(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)')
        return [
            (int(m.group(3)), 0 if m.group(4) == "-" else int(m.group(4)))
            for m in pat.finditer(self.log_path.read_text(errors="replace"))
            if m.group(1) == method and path_contains in m.group(2)
        ]


@pytest.fixture(scope="module", name="azurite")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The ``azurite`` fixture: one Azurite per test module (import ``azurite_server`` into the module)."""
    az = Azurite(tmp_path_factory.mktemp("azurite")).start()
    try:
        yield az
    finally:
        az.stop()
