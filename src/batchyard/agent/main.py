"""`batchyard agent`: one compute node. Talks to the server over HTTP only, never to the store.

This module only reads the command line: `batchyard.agent.node` is the agent. Run as a program (as the local
provider starts it, with ``python -S``), it first keeps TLS out of asyncio (`lean.hide_tls`): an agent
speaking plain HTTP to its server then never loads OpenSSL (decision 0182).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

#: Environment variable carrying the server's ``--auto-storage`` connection string to its agents only.
AUTO_STORAGE_ENV = "BATCHYARD_AUTO_STORAGE"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="batchyard agent", description="Run a batchyard compute node agent.")
    p.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8580")
    p.add_argument("--node-id", required=True)
    p.add_argument("--pool-id", required=True)
    p.add_argument("--root", required=True, type=Path, help="node root directory")
    p.add_argument("--account", default="devbatchaccount1")
    p.add_argument("--account-url", default="", help="the account URL tasks see in AZ_BATCH_ACCOUNT_URL")
    p.add_argument("--token", default=os.environ.get("BATCHYARD_NODE_TOKEN", ""))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dedicated", dest="dedicated", action="store_true", default=True)
    g.add_argument("--low-priority", dest="dedicated", action="store_false")
    p.add_argument("--poll-wait", type=float, default=20.0)
    p.add_argument("--orphan-timeout", type=float, default=600.0)
    p.add_argument(
        "--file-url-root",
        action="append",
        type=Path,
        default=[],
        help="a directory file:// resource files and output destinations may name (repeatable; none: refused)",
    )
    a = p.parse_args(argv)
    # the linked storage's connection string: kept from launcher helpers and tasks (they never inherit it)
    auto_storage = os.environ.pop(AUTO_STORAGE_ENV, None) or None
    accounts = json.loads(os.environ.get("BATCHYARD_USER_ACCOUNTS") or "[]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if __name__ == "__main__":  # this process is an agent, not a program that imported this module
        from batchyard.agent import lean

        lean.hide_tls()
    import asyncio

    from batchyard.agent import node

    cfg = node.AgentConfig(
        server=a.server.rstrip("/"),
        node_id=a.node_id,
        pool_id=a.pool_id,
        token=a.token,
        root=a.root,
        account=a.account,
        account_url=a.account_url or a.server.rstrip("/"),
        dedicated=a.dedicated,
        poll_wait=a.poll_wait,
        orphan_timeout=a.orphan_timeout,
        user_accounts=tuple(accounts),
        auto_storage=auto_storage,
        file_roots=tuple(r.resolve() for r in a.file_url_root),
        container_config=os.environ.pop("BATCHYARD_CONTAINER_CONFIG", None),
    )
    asyncio.run(node.run(cfg))


if __name__ == "__main__":
    main()
