"""`batchyard` command line: `server` runs everything, `agent` runs one compute node."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from pathlib import Path

DEV_ACCOUNT = "devbatchaccount1"
DEV_KEY = "ipJe2CPszs8w7KA3JShMAycxucJfI9LmzIetgJZD75y/WMKu35WnZBH5/tgFXBMvAJZeJNDEY7g7cNN5x3PMPQ=="


def _server(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="batchyard server", description="Run the batchyard server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8580)
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
    from batchyard.api import server as http_server
    from batchyard.api.logs import configure_logging

    http_server.add_arguments(p)  # --log-format, read timeouts, connection limit; env vars in --help
    a = p.parse_args(argv)
    try:
        limits = http_server.from_args(a)
    except ValueError as e:
        sys.exit(f"batchyard: {e}")
    configure_logging(a.log_level, a.log_format)

    from batchyard.api.app import Settings, create_app
    from batchyard.pools.local import LocalProvider
    from batchyard.pools.manager import PoolManager
    from batchyard.scheduler.loop import Scheduler
    from batchyard.service.agents import rebuild_assignments
    from batchyard.service.context import Ctx
    from batchyard.store.sql import SqlStore

    account = os.environ.get("BATCHYARD_ACCOUNT_NAME", DEV_ACCOUNT)
    key_text = os.environ.get("BATCHYARD_ACCOUNT_KEY", DEV_KEY)
    try:
        key = base64.b64decode(key_text, validate=True)
    except ValueError:
        sys.exit("BATCHYARD_ACCOUNT_KEY must be base64")
    data_dir: Path = a.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore(a.database_url) if a.database_url else SqlStore.for_data_dir(data_dir)
    store.migrate()
    ctx = Ctx(store=store, data_dir=data_dir, account=account)
    rebuild_assignments(ctx)
    local_url = f"http://127.0.0.1:{a.port}"
    provider = LocalProvider(local_url, account)
    manager = PoolManager(ctx, provider, lease_seconds=a.lease_seconds)
    scheduler = Scheduler(ctx)
    ctx.place_now = scheduler.place_now

    async def start_loops() -> None:
        manager.adopt()
        ctx.hub.wake_scheduler()
        ctx.hub.wake_pools()
        await asyncio.gather(scheduler.run(), scheduler.timers_loop(), manager.run())

    app = create_app(ctx, Settings(account=account, key=key, public_url=a.public_url), [start_loops])
    endpoint = a.public_url or f"http://{a.host}:{a.port}"
    print(
        f"batchyard server on {endpoint}\n"
        f"  account:  {account}\n"
        f"  key:      {key_text if key_text == DEV_KEY else '(from BATCHYARD_ACCOUNT_KEY)'}\n"
        f"  data dir: {data_dir}\n"
        f"  store:    {store.dialect}\n"
        f"  az batch: export AZURE_BATCH_ENDPOINT={endpoint} AZURE_BATCH_ACCOUNT={account} "
        f"AZURE_BATCH_ACCESS_KEY=<key>",
        flush=True,
    )
    import uvicorn

    uvicorn.run(
        app,
        host=a.host,
        port=a.port,
        log_level="warning",
        loop="uvloop",
        **http_server.uvicorn_options(limits),
        timeout_keep_alive=120,
        timeout_graceful_shutdown=2,
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        from batchyard import __version__

        print(f"batchyard {__version__}")
        return
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: batchyard [--version] {server,agent} [options]\n\n"
            "  server   run the API, scheduler and pool manager\n"
            "  agent    run one compute node agent"
        )
        return
    cmd, rest = args[0], args[1:]
    if cmd == "server":
        _server(rest)
    elif cmd == "agent":
        from batchyard.agent.main import main as agent_main

        agent_main(rest)
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
