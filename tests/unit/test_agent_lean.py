"""The agent's lean start (decisions 0180-0183): its HTTP client against a real socket, TLS hidden from asyncio
and given back, and the modules an idle agent must not load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from batchyard.agent.wire import Client, WireError

SRC = str(Path(__file__).resolve().parents[2] / "src")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def test_json_post_keeps_the_connection_and_reconnects_when_the_server_closed_it() -> None:
    connections: list[int] = []
    bodies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                head, body = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            bodies.append(body)
            assert b"x-batchyard-node-id: n1" in head.lower()
            out = b'{"ack": 3}'
            if len(bodies) == 2:  # chunked, then the server closes the idle connection
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + out[:5])
                writer.write(b"\r\n5\r\n" + out[5:] + b"\r\n0\r\n\r\n")
                await writer.drain()
                writer.close()
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
            await writer.drain()

    async def main() -> None:
        server, url = await _serve(handler)
        client = Client(url, timeout=5)
        try:
            for _ in range(3):
                resp = await client.post_json(
                    "/sync", {"a": "é", "n": [1]}, headers={"x-batchyard-node-id": "n1"}
                )
                assert resp.status_code == 200 and resp.json() == {"ack": 3}
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())
    assert bodies[0] == '{"a":"é","n":[1]}'.encode()  # httpx's json= bytes
    assert len(bodies) == 3 and len(connections) == 2  # reused once, then a new connection after the close


def test_failures_are_wire_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def main() -> None:
        for handler in (silent, hang_up):
            server, url = await _serve(handler)
            client = Client(url, timeout=0.3)
            with pytest.raises(WireError):
                await client.get("/x")
            await client.aclose()
            server.close()
        server, url = await _serve(hang_up)
        server.close()
        await server.wait_closed()
        with pytest.raises(WireError):  # refused
            await Client(url, timeout=1).get("/x")

    asyncio.run(main())


def test_streamed_download_and_query() -> None:
    payload = os.urandom(300_000)
    targets: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            targets.append(head.split(b" ")[1])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
            await writer.drain()

    async def main() -> bytes:
        server, url = await _serve(handler)
        client = Client(url + "/prefix/", timeout=5)
        resp = await client.stream("/p/a%20b/content", timeout=5, read_timeout=5)
        got = b""
        try:
            assert resp.status_code == 200
            async for chunk in resp.chunks():
                got += chunk
        finally:
            await resp.aclose()
        await client.get("/q", params={"version": "1.0 x"})
        await client.aclose()
        server.close()
        return got

    assert asyncio.run(main()) == payload
    assert targets == [b"/prefix/p/a%20b/content", b"/prefix/q?version=1.0+x"]


def _python(code: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([SRC, *sys.path[1:]])}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def test_tls_is_hidden_from_asyncio_and_given_back() -> None:
    code = (
        "from batchyard.agent import lean\n"
        "lean.hide_tls()\n"
        "import asyncio, asyncio.sslproto, asyncio.base_events, asyncio.selector_events, sys\n"
        "assert asyncio.sslproto.ssl is None and sys.modules['ssl'] is None\n"
        "lean.full_site()\n"
        "import ssl\n"
        "mods = (asyncio.sslproto, asyncio.base_events, asyncio.selector_events)\n"
        "assert all(m.ssl is ssl for m in mods), mods\n"
        "print(any(p.endswith('site-packages') for p in sys.path))\n"
    )
    assert _python(code) == "True"


def test_an_idle_agent_imports_no_feature_module() -> None:
    code = (
        "import sys\n"
        "from batchyard.agent import lean\n"
        "lean.hide_tls()\n"
        "import batchyard.agent.main, batchyard.agent.node\n"
        "heavy = ['httpx', 'psutil', 'uvloop', 'azure', 'aiohttp', 'hashlib', 'shutil', 'tempfile', 'zipfile',\n"
        "         'batchyard.agent.containers', 'batchyard.agent.multiinstance', 'batchyard.storage.download',\n"
        "         'batchyard.storage.cache', 'batchyard.storage.packages']\n"
        "print(sorted(m for m in heavy if m in sys.modules), sys.modules['ssl'])\n"
    )
    assert _python(code) == "[] None"


def test_finished_attempts_are_pruned_by_age_and_ever_more_rarely() -> None:
    """A node that finishes tens of thousands of tasks within two minutes must not rescan its memory of
    finished attempts on every completion (that was O(n) per task): the next pruning waits for twice
    what the last one kept, and only attempts older than 120 s are forgotten."""
    from batchyard.agent.node import FINISHED_KEPT, prune_finished

    finished = {f"old{i}": 0.0 for i in range(100)} | {f"new{i}": 1000.0 for i in range(FINISHED_KEPT + 1)}
    kept, limit = prune_finished(finished, 1010.0)
    assert set(kept) == {
        f"new{i}" for i in range(FINISHED_KEPT + 1)
    }  # under 120 s: a late reply may name them
    assert limit == 2 * (FINISHED_KEPT + 1)
    few, limit = prune_finished({"a": 0.0, "b": 500.0}, 600.0)
    assert few == {"b": 500.0} and limit == FINISHED_KEPT
