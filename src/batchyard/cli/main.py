"""`batchyard` command line: `server` runs everything, `agent` runs one compute node."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from batchyard.cli.startup import (
    ConfigError,
    autoscale_min_interval,
    bind,
    check_data_dir,
    check_port,
    check_positive,
    lock_data_dir,
    open_store,
)
from batchyard.pools.quota import DEFAULT_DEDICATED_CORES, DEFAULT_LOW_PRIORITY_CORES

if TYPE_CHECKING:
    from batchyard.pools.manager import PoolManager
    from batchyard.service.context import Ctx

DEV_ACCOUNT = "devbatchaccount1"
DEV_KEY = "ipJe2CPszs8w7KA3JShMAycxucJfI9LmzIetgJZD75y/WMKu35WnZBH5/tgFXBMvAJZeJNDEY7g7cNN5x3PMPQ=="


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"batchyard: {name}={raw!r} is not a number")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        sys.exit(f"batchyard: {name}={raw!r} is not an integer")


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchyard server", description="Run the batchyard server.")
    p.add_argument("--host", default=os.environ.get("BATCHYARD_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=_env_int("BATCHYARD_PORT", 8580))
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BATCHYARD_DATA_DIR", ".batchyard")))
    p.add_argument(
        "--database-url",
        default=os.environ.get("BATCHYARD_DATABASE_URL"),
        help="postgresql://... (default: SQLite under the data dir)",
    )
    p.add_argument(
        "--public-url",
        default=os.environ.get("BATCHYARD_PUBLIC_URL"),
        help="the URL clients use to reach this server (for nextLinks and resource urls)",
    )
    p.add_argument("--lease-seconds", type=float, default=30.0, help="node heartbeat lease")
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--dedicated-core-quota",
        type=int,
        default=_env_int("BATCHYARD_DEDICATED_CORE_QUOTA", DEFAULT_DEDICATED_CORES),
        help="cores of dedicated nodes the account may hold (env BATCHYARD_DEDICATED_CORE_QUOTA; "
        f"default {DEFAULT_DEDICATED_CORES})",
    )
    p.add_argument(
        "--low-priority-core-quota",
        type=int,
        default=_env_int("BATCHYARD_LOW_PRIORITY_CORE_QUOTA", DEFAULT_LOW_PRIORITY_CORES),
        help="cores of low-priority nodes the account may hold (env BATCHYARD_LOW_PRIORITY_CORE_QUOTA; "
        f"default {DEFAULT_LOW_PRIORITY_CORES})",
    )
    p.add_argument(
        "--orphan-timeout",
        type=float,
        default=_env_float("BATCHYARD_ORPHAN_TIMEOUT", 600.0),
        help="seconds an agent keeps its node running without the server before it stops "
        "(env BATCHYARD_ORPHAN_TIMEOUT; default 600)",
    )
    p.add_argument(
        "--fake-clock-file",
        type=Path,
        default=os.environ.get("BATCHYARD_FAKE_CLOCK_FILE") or None,
        help="TESTING ONLY: shift the service clock by the number of seconds written in this file "
        "(env BATCHYARD_FAKE_CLOCK_FILE; off by default)",
    )
    p.add_argument(
        "--simulated-agents",
        action="store_true",
        default=os.environ.get("BATCHYARD_SIMULATED_AGENTS", "") not in ("", "0"),
        help="BENCHMARKS AND TESTS ONLY: start no node agents; a simulator (bench/simagents.py) connected to "
        "<data dir>/simagents.sock runs them (env BATCHYARD_SIMULATED_AGENTS=1; off by default)",
    )
    p.add_argument(
        "--stop-nodes",
        action="store_true",
        help="when the server stops, stop its nodes and their tasks too (default: they keep running "
        "and the next server re-adopts them)",
    )
    p.add_argument(
        "--autoscale-min-interval",
        default=os.environ.get("BATCHYARD_AUTOSCALE_MIN_INTERVAL", "PT5M"),
        help="batchyard extension: the shortest autoScaleEvaluationInterval a pool may ask for, an ISO-8601 "
        "duration of at least PT1S (env BATCHYARD_AUTOSCALE_MIN_INTERVAL; default PT5M, the service's)",
    )
    p.add_argument(
        "--auto-storage",
        default=os.environ.get("BATCHYARD_AUTO_STORAGE") or None,
        metavar="CONNECTION_STRING",
        help="the account's linked storage for autoStorageContainerName resource files, as an Azure Storage "
        "connection string (env BATCHYARD_AUTO_STORAGE; default: none, such resource files fail)",
    )
    p.add_argument(
        "--file-url-root",
        action="append",
        type=Path,
        default=[Path(d) for d in os.environ.get("BATCHYARD_FILE_URL_ROOTS", "").split(os.pathsep) if d],
        metavar="DIR",
        help="a directory file:// resource files and output destinations may name, batchyard only "
        "(repeatable; env BATCHYARD_FILE_URL_ROOTS, separated by ':'; default: none, file:// URLs fail)",
    )
    from batchyard.api import server as http_server

    http_server.add_arguments(p)  # --log-format, read timeouts, connection limit; env vars in --help
    return p


def _server(argv: list[str]) -> None:
    a = _server_parser().parse_args(argv)
    try:
        _serve(a)
    except ConfigError as e:
        sys.exit(f"batchyard: {e}")
    except KeyboardInterrupt:  # Ctrl-C while starting (once serving, Ctrl-C is a normal stop)
        sys.exit("batchyard: interrupted while starting")


def _serve(a: argparse.Namespace) -> None:
    from batchyard.api import server as http_server
    from batchyard.api.logs import configure_logging

    check_port(a.port)
    check_positive("--orphan-timeout", a.orphan_timeout)
    check_positive("--lease-seconds", a.lease_seconds)
    for name, v in (
        ("--dedicated-core-quota", a.dedicated_core_quota),
        ("--low-priority-core-quota", a.low_priority_core_quota),
    ):
        if v < 0:
            raise ConfigError(f"{name} {v} must not be negative")
    level = logging.getLevelName(a.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"--log-level {a.log_level} is not one of debug, info, warning, error")
    min_interval = autoscale_min_interval(a.autoscale_min_interval)
    try:
        limits = http_server.from_args(a)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    account = os.environ.get("BATCHYARD_ACCOUNT_NAME", DEV_ACCOUNT)
    key_text = os.environ.get("BATCHYARD_ACCOUNT_KEY", DEV_KEY)
    try:
        key = base64.b64decode(key_text, validate=True)
    except ValueError:
        raise ConfigError("BATCHYARD_ACCOUNT_KEY must be base64") from None
    data_dir = check_data_dir(a.data_dir.resolve())
    lock = lock_data_dir(data_dir)
    sock, local_url = bind(a.host, a.port)
    store, pg_lock = open_store(a.database_url, data_dir)
    configure_logging(a.log_level, a.log_format)

    from batchyard.api.app import Settings, create_app
    from batchyard.pools.autoscaler import Autoscaler
    from batchyard.pools.local import LocalProvider
    from batchyard.pools.manager import PoolManager
    from batchyard.pools.provider import NodeProvider
    from batchyard.pools.quota import Quotas
    from batchyard.scheduler.loop import Scheduler
    from batchyard.service import housekeeping
    from batchyard.service.account import ensure_epoch
    from batchyard.service.agents import rebuild_assignments
    from batchyard.service.context import Ctx

    ctx = Ctx(store=store, data_dir=data_dir, account=account)
    if a.fake_clock_file is not None:
        from batchyard.service.fakeclock import FileOffsetClock

        ctx.clock = FileOffsetClock(Path(a.fake_clock_file).resolve())
    ctx.autoscale.min_interval = min_interval
    rebuild_assignments(ctx)
    ensure_epoch(ctx)
    housekeeping.on_start(ctx)
    roots = tuple(r.resolve() for r in a.file_url_root)
    for r in roots:
        if not r.is_dir():
            raise ConfigError(f"--file-url-root {r} is not a directory")
    provider: NodeProvider = LocalProvider(
        local_url, account, orphan_timeout=a.orphan_timeout, auto_storage=a.auto_storage, file_url_roots=roots
    )
    if a.simulated_agents:  # decision 0187: nodes whose agents a simulator runs (benchmarks, tests)
        from batchyard.pools.simulated import SimulatedProvider

        provider = simulated = SimulatedProvider(local_url, data_dir)
        simulated.listen()
    quotas = Quotas(dedicated_cores=a.dedicated_core_quota, low_priority_cores=a.low_priority_core_quota)
    manager = PoolManager(ctx, provider, lease_seconds=a.lease_seconds, quotas=quotas)
    if a.simulated_agents:
        from batchyard.pools import simulated as sim

        manager.spawn_batch = sim.SPAWN_BATCH
    scheduler = Scheduler(ctx)
    ctx.place_now = scheduler.place_now

    from batchyard.pools.nat import Forwarder, public_address

    forwarder = Forwarder(a.host, public_address(a.host, a.public_url))
    ctx.endpoints = forwarder  # inbound NAT and remote login (decision 0132)

    async def start_loops() -> None:
        manager.adopt()
        ctx.hub.wake_scheduler()
        ctx.hub.wake_pools()
        await asyncio.gather(
            scheduler.run(),
            scheduler.timers_loop(),
            manager.run(),
            Autoscaler(ctx).run(),
            forwarder.run(ctx.store),
            _sweep_node_users(ctx),
        )

    app = create_app(ctx, Settings(account=account, key=key, public_url=a.public_url), [start_loops])
    endpoint = a.public_url or local_url
    print(
        f"batchyard server on {endpoint}\n"
        f"  account:  {account}\n"
        f"  key:      {key_text if key_text == DEV_KEY else '(from BATCHYARD_ACCOUNT_KEY)'}\n"
        f"  data dir: {data_dir}\n"
        f"  store:    {store.dialect}\n"
        f"  quotas:   {a.dedicated_core_quota} dedicated cores, {a.low_priority_core_quota} low-priority cores\n"
        f"  nodes:    {'stopped with the server' if a.stop_nodes else 'keep running when the server stops'}; "
        f"an agent without its server stops after {a.orphan_timeout:g} s (--orphan-timeout)\n"
        + (
            f"  clock:    FAKE, shifted by the seconds in {a.fake_clock_file} (testing only)\n"
            if a.fake_clock_file
            else ""
        )
        + f"  az batch: export AZURE_BATCH_ENDPOINT={endpoint} AZURE_BATCH_ACCOUNT={account} "
        f"AZURE_BATCH_ACCESS_KEY=<key>",
        flush=True,
    )
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """SIGINT/SIGTERM stop the server; unlike uvicorn's own, the signal is not raised again after
            the shutdown, so what follows (the closing line, --stop-nodes) always runs and the exit is 0."""
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            ctx.hub.close()  # long polls answer now instead of holding the shutdown
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=a.host,
        port=a.port,
        log_level="warning",
        loop="uvloop",
        **http_server.uvicorn_options(limits),
        timeout_keep_alive=120,
        timeout_graceful_shutdown=2,
    )
    with contextlib.suppress(KeyboardInterrupt):
        try:
            Server(config).run(sockets=[sock])
        finally:
            _after_stop(manager, data_dir, a, pg_lock is not None)
    lock.close()


async def _sweep_node_users(ctx: Ctx) -> None:
    """Node user accounts of nodes that are gone (removed while the server was down, or a crash): deleted."""
    from batchyard.pools.hostusers import HostAccounts
    from batchyard.service.node_users import recorded_accounts

    await asyncio.to_thread(HostAccounts(ctx.data_dir).sweep, recorded_accounts(ctx))


def _after_stop(manager: PoolManager, data_dir: Path, a: argparse.Namespace, pg: bool) -> None:
    """Say what keeps running after the server (one line), or stop it all with --stop-nodes."""
    if a.stop_nodes:
        n = manager.stop_all_agents()
        print(f"batchyard: server stopped, and its {n} node agent(s) with their tasks", flush=True)
        return
    n = manager.live_agents()
    if n == 0:
        print("batchyard: server stopped", flush=True)
        return
    print(
        f"batchyard: server stopped; {n} node agent(s) keep running their tasks and are re-adopted by the next "
        f"server on {data_dir} (they stop by themselves after {a.orphan_timeout:g} s without one; "
        f"`batchyard stop-nodes --data-dir {data_dir}` stops them now)",
        flush=True,
    )


def _stop_nodes(argv: list[str]) -> None:
    p = argparse.ArgumentParser(
        prog="batchyard stop-nodes",
        description="Stop every node agent (and its tasks) of a data dir whose server is not running. "
        "The nodes stay in their pools; their running tasks are requeued, and the next server restarts them.",
    )
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BATCHYARD_DATA_DIR", ".batchyard")))
    p.add_argument("--database-url", default=os.environ.get("BATCHYARD_DATABASE_URL"))
    a = p.parse_args(argv)
    try:
        data_dir = a.data_dir.resolve()
        if not (data_dir / "batchyard.db").exists() and not a.database_url:
            raise ConfigError(f"{data_dir} is not a batchyard data dir")
        lock = lock_data_dir(data_dir)
        store, _ = open_store(a.database_url, data_dir)
    except ConfigError as e:
        sys.exit(f"batchyard: {e}")
    from batchyard.pools.local import LocalProvider
    from batchyard.pools.manager import PoolManager
    from batchyard.service.context import Ctx

    ctx = Ctx(store=store, data_dir=data_dir, account=os.environ.get("BATCHYARD_ACCOUNT_NAME", DEV_ACCOUNT))
    n = PoolManager(ctx, LocalProvider("", ctx.account)).stop_all_agents()
    print(f"batchyard: stopped {n} node agent(s) of {data_dir}", flush=True)
    lock.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        from batchyard import __version__

        print(f"batchyard {__version__}")
        return
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: batchyard [--version] {server,stop-nodes,agent,preempt,app} [options]\n\n"
            "  server      run the API, scheduler and pool manager\n"
            "  stop-nodes  stop the node agents a stopped server left running\n"
            "  agent       run one compute node agent\n"
            "  preempt     preempt low-priority nodes of a running server (fault injection)\n"
            "  app         manage application packages on a server"
        )
        return
    cmd, rest = args[0], args[1:]
    if cmd == "server":
        _server(rest)
    elif cmd == "stop-nodes":
        _stop_nodes(rest)
    elif cmd == "preempt":
        from batchyard.cli.preempt import main as preempt_main

        preempt_main(rest)
    elif cmd == "agent":
        from batchyard.agent.main import main as agent_main

        agent_main(rest)
    elif cmd == "app":
        from batchyard.cli.apps import main as app_main

        app_main(rest)
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
