"""Checks the server runs before it serves: each failure is one `ConfigError` line, never a traceback.

The order matters: the data dir is locked before anything touches it, and the listening socket is bound
before the store is migrated or an agent is adopted, so a server that cannot serve changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import ipaddress
import os
import socket
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, text

from batchyard.store.sql import SqlStore

LOCK_FILE = "server.lock"
#: pg_try_advisory_lock key: one batchyard server per PostgreSQL database ("batchyd" in ASCII).
PG_LOCK_KEY = 0x62617463687964


class ConfigError(Exception):
    """A configuration the server cannot run with; the message is the whole story, on one line."""


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (1-65535)")
    return port


def check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name} {value:g} must be greater than 0")
    return value


def autoscale_min_interval(text: str) -> datetime.timedelta:
    """`--autoscale-min-interval`: an ISO-8601 duration between 1 s and the service's 5 minutes."""
    from batchyard.models.decode import parse_duration

    try:
        td = parse_duration(text)
    except ValueError:
        raise ConfigError(
            f"--autoscale-min-interval {text} is not an ISO-8601 duration (e.g. PT5S)"
        ) from None
    if not datetime.timedelta(seconds=1) <= td <= datetime.timedelta(minutes=5):
        raise ConfigError(f"--autoscale-min-interval {text} must be between PT1S and PT5M")
    return td


def check_data_dir(data_dir: Path) -> Path:
    """Create the data dir and prove it is writable (a file is created and removed)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"data dir {data_dir} is not writable: {e.strerror or e}") from None
    return data_dir


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data dir for the life of the process (the kernel drops it on exit)."""
    path = data_dir / LOCK_FILE
    try:
        f = open(path, "a+")  # noqa: SIM115 - held open until the process exits
    except OSError as e:
        raise ConfigError(f"cannot open the lock file {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(
                f"another batchyard server (pid {holder}) is using the data dir {data_dir}; stop it first"
            ) from None
        raise ConfigError(f"cannot lock {path}: {e.strerror or e}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """Bind the listening socket; returns it and the URL local agents dial (an address it really serves)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    # not listening yet: uvicorn listens once the app is ready, so accepting connections still means ready
    return sock, dial_url(str(sock.getsockname()[0]), port)


def dial_url(bound: str, port: int) -> str:
    """The URL for agents on this host: loopback for a wildcard address, IPv6 in brackets."""
    ip = ipaddress.ip_address(bound.split("%", 1)[0])
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"http://[{ip}]:{port}" if ip.version == 6 else f"http://{ip}:{port}"


def redact(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(database_url: str | None, data_dir: Path) -> tuple[SqlStore, Connection | None]:
    """Open and migrate the store; with PostgreSQL also take the one-server-per-database lock."""
    where = redact(database_url) if database_url else str(data_dir / "batchyard.db")
    try:
        store = SqlStore(database_url) if database_url else SqlStore.for_data_dir(data_dir)
        held: Connection | None = None
        if store.dialect == "postgresql":
            held = store.engine.connect()
            got = held.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
            held.commit()
            if not got:
                held.close()
                raise ConfigError(f"another batchyard server is using the database {where}; stop it first")
        store.migrate()
    except ConfigError:
        raise
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot open the database {where}: missing driver {e.name}") from None
    except Exception as e:  # noqa: BLE001 - any driver/URL failure becomes one line
        raise ConfigError(f"cannot open the database {where}: {_first_line(e)}") from None
    return store, held


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    msg = str(orig if orig is not None else e).strip() or type(e).__name__
    return msg.splitlines()[0]
