"""Connection pools shared by all of an agent's downloads and uploads (optional).

Without one, every `download_resource_files` / `upload_output_files` call opens its own HTTP connections, which
costs a TCP (and, against Azure, a TLS) handshake per task. An agent creates one `Connections` inside its event
loop, passes it in `StagingOptions.connections`, and closes it at shutdown. Measured against Azurite (plain
HTTP, 1 KiB blobs): 37 → 32 ms wall and 11 → 8 ms CPU per task.
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Any

import httpx


@cache
def ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one costs ~0.15 s of CPU, far more than a small file."""
    return ssl.create_default_context()


def new_http_client(timeout: float, retries: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        verify=ssl_context(),
        transport=httpx.AsyncHTTPTransport(retries=retries, verify=ssl_context()),
    )


class Connections:
    """An httpx client (for ``httpUrl``) and an aiohttp session (for the blob SDK), created on first use."""

    def __init__(self, timeout: float = 60.0, retries: int = 3) -> None:
        self._timeout = timeout
        self._retries = retries
        self._http: httpx.AsyncClient | None = None
        self._session: Any = None

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = new_http_client(self._timeout, self._retries)
        return self._http

    def blob_transport(self) -> Any:
        """An azure-core transport over the shared session (the SDK must not close it)."""
        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport

        if self._session is None:
            self._session = aiohttp.ClientSession()
        return AioHttpTransport(session=self._session, session_owner=False)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._session is not None:
            await self._session.close()
            self._session = None
