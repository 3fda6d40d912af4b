"""Pool usage: node core time and the resources nodes really used (decision 0141).

Core time is kept as spans in `pool_usage`, one row per node presence (start = the node's allocationTime, end
when it leaves), derived from the store alone by `tick`: nothing about time lives only in memory, so a
killed server loses nothing (a span whose node vanished while the server was down ends at the last pass
recorded before the kill). Agents report cumulative resource figures on their syncs (`note_stats`, a dict
write); `tick` copies the newest into the node's span, folding in an earlier agent process's figures when the
agent restarted. Reads (pool `$expand=stats`, `/lifetimepoolstats`, `/poolusagemetrics`) sum the spans.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, bindparam, or_, select, update

from batchyard.models import errors, odata
from batchyard.models.clock import format_time, parse_time
from batchyard.models.decode import format_duration
from batchyard.models.odata import FilterSpec, PropSpec
from batchyard.pools.quota import vm_cores
from batchyard.service.common import Body
from batchyard.service.context import Ctx
from batchyard.service.listing import ListQuery, decode_token, encode_token, parse_filter
from batchyard.store import schema
from batchyard.store.sql import Row, Tx

U = schema.pool_usage
GIB = float(1 << 30)
#: Length of one usage-metrics aggregation interval (the service's examples: half-hour intervals).
INTERVAL = timedelta(minutes=30)
#: The counters row holding the time of the last usage pass (microseconds since the epoch).
LAST_PASS = "pool_usage_pass_us"
#: Seconds between two usage passes (they run on the timer loop's one-second tick).
PASS_EVERY = 5.0

#: Cumulative figures an agent reports; summed across agent restarts and nodes.
SUMS = (
    "seconds",
    "cpuSeconds",
    "coreSeconds",
    "memGiBSeconds",
    "diskGiBSeconds",
    "diskReadOps",
    "diskWriteOps",
    "diskReadBytes",
    "diskWriteBytes",
    "netReadBytes",
    "netWriteBytes",
)
PEAKS = ("memPeakGiB", "diskPeakGiB")

USAGE_METRICS = FilterSpec(
    "List pool usage metrics",
    {
        "poolId": PropSpec("string", odata.ALL_OPS, startswith=True, casefold=True),
        "startTime": PropSpec("datetime", odata.ALL_OPS),
        "endTime": PropSpec("datetime", odata.ALL_OPS),
        "vmSize": PropSpec("string", odata.EQ_NE, casefold=True),
    },
)


def _ts(text: str) -> float:
    return parse_time(text).timestamp()


def _text(ts: float) -> str:
    return format_time(datetime.fromtimestamp(ts, UTC))


# --- agents' reports ----------------------------------------------------------------------------------------


def note_stats(ctx: Ctx, node_id: str, stats: Body) -> None:
    """An agent's cumulative resource figures (from its sync): kept in memory until the next pass."""
    ctx.node_stats[node_id] = stats


def _merge(res: Body | None, report: Body) -> Body:
    """A span's figures with a new cumulative report: a report of another agent process (boot) than the one
    recorded folds the recorded figures into `base` first."""
    out: Body = dict(res or {})
    base: Body = dict(out.get("base") or {})
    last: Body = dict(out.get("last") or {})
    if last and last.get("boot") != report.get("boot"):
        for k in SUMS:
            base[k] = float(base.get(k, 0.0)) + float(last.get(k, 0.0))
        for k in PEAKS:
            base[k] = max(float(base.get(k, 0.0)), float(last.get(k, 0.0)))
    out["base"] = base
    out["last"] = {k: report[k] for k in (*SUMS, *PEAKS, "boot") if k in report}
    return out


def _totals(res: Body | None) -> Body:
    """A span's figures: what earlier agent processes reported plus the current one's."""
    if not res:
        return {}
    base, last = res.get("base") or {}, res.get("last") or {}
    out: Body = {k: float(base.get(k, 0.0)) + float(last.get(k, 0.0)) for k in SUMS}
    for k in PEAKS:
        out[k] = max(float(base.get(k, 0.0)), float(last.get(k, 0.0)))
    return out


# --- the pass -------------------------------------------------------------------------------------------------


def _last_pass(tx: Tx) -> str | None:
    row = tx.get(schema.counters, name=LAST_PASS)
    return _text(int(row["value"]) / 1e6) if row else None


def _record_pass(tx: Tx, now: datetime) -> None:
    value = int(now.timestamp() * 1e6)
    if tx.exists(schema.counters, name=LAST_PASS):
        tx.update(schema.counters, {"value": value}, name=LAST_PASS)
    else:
        tx.insert(schema.counters, {"name": LAST_PASS, "value": value})


def unrecorded(
    tx: Tx, recorded: set[str], now_text: str, pool_key: str | None = None, present: set[str] | None = None
) -> list[Row]:
    """Spans for the nodes (of one pool, or all) that have none open yet: what the next pass inserts.
    `present`: the ids of all nodes, when the caller has just read them."""
    n = schema.nodes
    if present is None or pool_key is not None:
        ids = select(n.c.id)
        if pool_key is not None:
            ids = ids.where(n.c.pool_key == pool_key)
        present = {r[0] for r in tx.conn.execute(ids).all()}
    missing = sorted(present - recorded)
    if not missing:  # the usual case: only ids are read, never node bodies
        return []
    stmt = select(n.c.id, n.c.pool_key, n.c.body).where(n.c.id.in_(missing[:1000]))
    pools: dict[str, Row | None] = {}
    out: list[Row] = []
    for node_id, key, body_text in tx.conn.execute(stmt).all():
        if key not in pools:
            pools[key] = tx.get(schema.pools, key=key)
        pool = pools[key]
        if pool is None:
            continue
        body = json.loads(body_text) if isinstance(body_text, str) else body_text
        vm = str(body.get("vmSize") or pool["body"].get("vmSize", ""))
        out.append(
            {
                "node_id": node_id,
                "start": str(body.get("allocationTime") or now_text),
                "pool_key": key,
                "pool_id": pool["id"],
                "pool_created": pool["creation_time"],
                "vm_size": vm,
                "cores": vm_cores(vm),
                "dedicated": int(bool(body.get("isDedicated", True))),
                "end": None,
                "res": None,
            }
        )
    return out


def _open_ids(tx: Tx) -> set[str]:
    return {r[0] for r in tx.conn.execute(select(U.c.node_id).where(U.c.end.is_(None))).all()}


def tick(ctx: Ctx) -> None:
    """Open a span for every node without one, end the spans of nodes that are gone, store agents' figures."""
    now, now_text, _ = ctx.stamp()
    stats, ctx.node_stats = ctx.node_stats, {}
    with ctx.store.tx() as tx:
        previous = _last_pass(tx)
        # ids and starts only: the figures are read for the nodes that reported, in one statement below
        spans = tx.conn.execute(select(U.c.node_id, U.c.start).where(U.c.end.is_(None))).all()
        open_starts: dict[str, str] = {r[0]: r[1] for r in spans}
        present = {r[0] for r in tx.conn.execute(select(schema.nodes.c.id)).all()}
        for row in unrecorded(tx, set(open_starts), now_text, present=present):
            if not tx.exists(U, node_id=row["node_id"], start=row["start"]):
                tx.insert(U, row)
                open_starts[row["node_id"]] = row["start"]
        for node_id, start in open_starts.items():
            if node_id not in present:
                # gone since the last pass: it left at most PASS_EVERY ago, or while the server was down
                end = previous if previous and previous > start else now_text
                tx.update(U, {"end": end}, node_id=node_id, start=start)
        _store_figures(tx, {k: v for k, v in stats.items() if k in present and k in open_starts}, open_starts)
        _record_pass(tx, now)


def _store_figures(tx: Tx, stats: dict[str, Body], open_starts: dict[str, str]) -> None:
    """The agents' newest figures into their nodes' open spans: one read and one batched write for all
    (an idle pool's agents each report every 20 s: a statement each would cost nodes x passes)."""
    if not stats:
        return
    ids = sorted(stats)
    old: dict[str, str | None] = {}
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        read = select(U.c.node_id, U.c.res).where(U.c.end.is_(None), U.c.node_id.in_(part))
        old.update((r[0], r[1]) for r in tx.conn.execute(read).all())
    params = []
    for node_id, report in stats.items():
        before = old.get(node_id)
        res = _merge(json.loads(before) if before else None, report)
        params.append({"k_node": node_id, "k_start": open_starts[node_id], "v_res": json.dumps(res)})
    write = (
        update(U)
        .where(U.c.node_id == bindparam("k_node"), U.c.start == bindparam("k_start"))
        .values(res=bindparam("v_res"))
    )
    tx.conn.execute(write, params)


# --- reads ------------------------------------------------------------------------------------------------------


def _core_seconds(row: Row, lo: float, hi: float) -> float:
    """The span's core seconds inside [lo, hi)."""
    start = _ts(row["start"])
    end = _ts(row["end"]) if row["end"] else hi
    return max(0.0, min(end, hi) - max(start, lo)) * int(row["cores"])


def _stats(url: str, start: str, now_text: str, rows: Iterable[Row]) -> Body:
    """`stats` of a pool (or of the account): usage and resource statistics over `rows`."""
    lo, hi = _ts(start), _ts(now_text)
    dedicated = 0.0
    acc: Body = {k: 0.0 for k in (*SUMS, *PEAKS)}
    for r in rows:
        if r["dedicated"]:
            dedicated += _core_seconds(r, lo, hi)
        t = _totals(json.loads(r["res"]) if r.get("res") else None)
        for k in SUMS:
            acc[k] += float(t.get(k, 0.0))
        for k in PEAKS:
            acc[k] = max(acc[k], float(t.get(k, 0.0)))
    seconds = acc["seconds"] or 1.0
    usage = {"startTime": start, "lastUpdateTime": now_text, "dedicatedCoreTime": _dur(dedicated)}
    resources = {
        "startTime": start,
        "lastUpdateTime": now_text,
        "avgCPUPercentage": 100.0 * acc["cpuSeconds"] / (acc["coreSeconds"] or 1.0),
        "avgMemoryGiB": acc["memGiBSeconds"] / seconds,
        "peakMemoryGiB": acc["memPeakGiB"],
        "avgDiskGiB": acc["diskGiBSeconds"] / seconds,
        "peakDiskGiB": acc["diskPeakGiB"],
        "diskReadIOps": str(int(acc["diskReadOps"])),
        "diskWriteIOps": str(int(acc["diskWriteOps"])),
        "diskReadGiB": acc["diskReadBytes"] / GIB,
        "diskWriteGiB": acc["diskWriteBytes"] / GIB,
        "networkReadGiB": acc["netReadBytes"] / GIB,
        "networkWriteGiB": acc["netWriteBytes"] / GIB,
    }
    return {
        "url": url,
        "startTime": start,
        "lastUpdateTime": now_text,
        "usageStats": usage,
        "resourceStats": resources,
    }


def _dur(seconds: float) -> str:
    return format_duration(timedelta(seconds=max(seconds, 0.0)))


def _settled(tx: Tx, rows: list[Row]) -> list[Row]:
    """Open spans of nodes that are gone end where the next pass will end them (a read never counts a node
    after it left, even before that pass ran, e.g. just after a restart)."""
    if not any(r["end"] is None for r in rows):
        return rows
    present = {r[0] for r in tx.conn.execute(select(schema.nodes.c.id)).all()}
    previous = _last_pass(tx)
    out = []
    for r in rows:
        if r["end"] is None and r["node_id"] not in present and previous and previous > r["start"]:
            r = dict(r, end=previous)
        out.append(r)
    return out


def _live_figures(ctx: Ctx, rows: list[Row]) -> list[Row]:
    """Rows with the figures reported since the last pass merged in (a read sees the newest reports)."""
    out = []
    for r in rows:
        report = ctx.node_stats.get(r["node_id"]) if r["end"] is None else None
        if report is not None:
            r = dict(r, res=json.dumps(_merge(json.loads(r["res"]) if r.get("res") else None, report)))
        out.append(r)
    return out


def pool_stats(ctx: Ctx, tx: Tx, pool: Row, url: str) -> Body:
    """A pool's `stats` (`$expand=stats`): its nodes since the pool was created."""
    _, now_text, _ = ctx.stamp()
    rows = tx.select(U, and_(U.c.pool_key == pool["key"], U.c.pool_created == pool["creation_time"]))
    rows = _settled(tx, rows) + unrecorded(tx, _open_ids(tx), now_text, pool["key"])
    return _stats(url, pool["creation_time"], now_text, _live_figures(ctx, rows))


def lifetime_pool_stats(ctx: Ctx, url: str) -> Body:
    """`GET /lifetimepoolstats`: every pool the account ever had, deleted ones included."""
    from batchyard.service.account import account_epoch

    _, now_text, _ = ctx.stamp()
    with ctx.store.tx() as tx:
        start = account_epoch(tx)
        rows = _settled(tx, tx.select(U)) + unrecorded(tx, _open_ids(tx), now_text)
    return _stats(url, start, now_text, _live_figures(ctx, rows))


# --- usage metrics ------------------------------------------------------------------------------------------------


def _interval_floor(ts: float) -> float:
    step = INTERVAL.total_seconds()
    return ts - (ts % step)


def _window(ctx: Ctx, start: str | None, end: str | None) -> tuple[float, float]:
    """The aggregation intervals asked for; by default the last one that has ended."""
    now = ctx.clock().timestamp()
    last_end = _interval_floor(now)
    lo = _parse_q("starttime", start) if start else last_end - INTERVAL.total_seconds()
    hi = _parse_q("endtime", end) if end else last_end
    hi = min(hi, last_end)  # an interval is reported once it has ended
    return _interval_floor(lo), hi


def _parse_q(name: str, value: str) -> float:
    try:
        return parse_time(value).timestamp()
    except ValueError:
        raise errors.invalid_query_parameter(name, value) from None


def usage_metrics(
    ctx: Ctx, q: ListQuery, start: str | None, end: str | None
) -> tuple[list[Body], str | None]:
    """`GET /poolusagemetrics`: per pool and half-hour interval, the core hours of its nodes."""
    after = None
    if q.skiptoken:  # the window travels in the token: a next page covers the same intervals
        try:
            lo_s, hi_s, after = decode_token(q.skiptoken).split("|", 2)
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise errors.invalid_query_parameter("$skiptoken", q.skiptoken) from None
    else:
        lo, hi = _window(ctx, start, end)
    expr = parse_filter(q, USAGE_METRICS)
    step = INTERVAL.total_seconds()
    items: list[Body] = []
    if hi > lo:
        with ctx.store.tx() as tx:
            rows = tx.select(U, and_(U.c.start < _text(hi), or_(U.c.end.is_(None), U.c.end > _text(lo))))
            rows = _settled(tx, rows) + unrecorded(tx, _open_ids(tx), _text(hi))
        per: dict[tuple[float, str, str], float] = {}
        for r in rows:
            s = max(_ts(r["start"]), lo)
            e = min(_ts(r["end"]) if r["end"] else hi, hi)
            t = _interval_floor(s)
            while t < e:
                part = _core_seconds(r, t, min(t + step, e))
                if part > 0:
                    k = (t, r["pool_id"], r["vm_size"])
                    per[k] = per.get(k, 0.0) + part
                t += step
        for (t, pool_id, vm), secs in sorted(per.items()):
            items.append(
                {
                    "poolId": pool_id,
                    "startTime": _text(t),
                    "endTime": _text(t + step),
                    "vmSize": vm,
                    "totalCoreHours": secs / 3600.0,
                }
            )
    if expr is not None:
        items = [i for i in items if odata.evaluate(expr, i)]

    def key(i: Body) -> str:
        return f"{i['startTime']}|{str(i['poolId']).lower()}|{i['vmSize']}"

    if after is not None:
        items = [i for i in items if key(i) > after]
    limit = max(1, min(q.max_results, 1000))
    if len(items) > limit:
        return items[:limit], encode_token(f"{lo}|{hi}|{key(items[limit - 1])}")
    return items, None
