"""Health probes for container platforms and load balancers, outside Shared Key and api-version.

`GET /healthz` (liveness): 200 whenever the process serves HTTP. `GET /readyz` (readiness): 200 when the
store answers and its schema is at the migration head this build ships, else 503 with the reason. The store
is asked from a worker thread with a deadline, so an unreachable PostgreSQL never stalls the event loop, and
concurrent probes share one check.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from alembic.script import ScriptDirectory

from batchyard.store.migrate import alembic_config
from batchyard.store.sql import SqlStore

log = logging.getLogger("batchyard.health")

READY_TIMEOUT = 5.0


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migration heads shipped with this build (read once: parsing the scripts takes milliseconds)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def store_revisions(store: SqlStore) -> frozenset[str]:
    """The store's applied revisions, on a raw connection (no BEGIN IMMEDIATE, so no write lock on SQLite)."""
    conn = store.engine.raw_connection()  # a failure here: the store is unreachable
    try:
        cur = conn.cursor()
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            rows = cur.fetchall()
        except Exception:  # reachable, but never migrated
            return frozenset()
        finally:
            cur.close()
        return frozenset(str(r[0]) for r in rows)
    finally:
        conn.close()


class Readiness:
    def __init__(self, store: SqlStore, timeout: float = READY_TIMEOUT) -> None:
        self.store = store
        self.timeout = timeout
        self._running: asyncio.Future[frozenset[str]] | None = None

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) where details never carry the database URL or credentials."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(store_revisions, self.store))
        try:
            have = await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except TimeoutError:
            return False, {
                "status": "unavailable",
                "reason": f"the store did not answer within {self.timeout:g} s",
            }
        except Exception as e:  # any driver error: the store is not usable
            log.warning("readiness: the store is not reachable: %s", e)
            return False, {
                "status": "unavailable",
                "reason": f"the store is not reachable ({type(e).__name__})",
            }
        want = head_revisions()
        if have != want:
            return False, {
                "status": "unavailable",
                "reason": "the store schema is not at this server's migration head",
                "storeRevision": sorted(have),
                "headRevision": sorted(want),
            }
        return True, {"status": "ready", "storeRevision": sorted(have)}
