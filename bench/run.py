"""batchyard benchmark harness: throughput and latency, with baselines measured in the same run.

    python bench/run.py [--scenarios dispatch,submit,latency,deps,scale,nodes,idle] [--quick]

Prints a table (scenario, metric, batchyard, baseline(s), ratio, target, met?) and writes
bench/results/YYYY-MM-DD.json. See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scenarios  # noqa: E402
from bench.report import ScenarioResult, machine_info, markdown_table, table, write_json  # noqa: E402
from bench.slurm import slurm_version  # noqa: E402

SCENARIOS: dict[str, Callable[[scenarios.Bench, ScenarioResult], None]] = {
    "dispatch": scenarios.dispatch,
    "submit": scenarios.submit,
    "latency": scenarios.latency,
    "deps": scenarios.deps,
    "scale": scenarios.scale,
    "nodes": scenarios.nodes,
    "idle": scenarios.idle,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of: " + ", ".join(SCENARIOS)
    )
    p.add_argument("--quick", action="store_true", help="small sizes for a fast sanity run (a few minutes)")
    p.add_argument("--dispatch-tasks", type=int, default=20_000, help="tasks in the dispatch scenario")
    p.add_argument(
        "--dispatch-slots",
        type=int,
        default=4,
        help="task slots per node in dispatch (2 nodes; 4 = the target's pool)",
    )
    p.add_argument("--scale-tasks", type=int, default=1_000_000, help="tasks in the scale scenario")
    p.add_argument(
        "--scale-budget",
        type=float,
        default=900.0,
        help="seconds allowed for adding the scale tasks; past it the add stops and the time is extrapolated",
    )
    p.add_argument(
        "--scale-connections", type=int, default=8, help="concurrent connections for the scale add"
    )
    p.add_argument(
        "--scale-store",
        default=None,
        help="run the scale scenario on PostgreSQL: postgresql://user@host:port/db (a schema of its own, "
        "dropped afterwards); default: SQLite under the data dir",
    )
    p.add_argument("--nodes", type=int, default=200, help="local nodes in the nodes scenario")
    p.add_argument(
        "--nodes-interval", type=float, default=60.0, help="quiet interval measured in the nodes scenario"
    )
    p.add_argument("--idle-nodes", type=int, default=1_000, help="real local nodes in the idle scenario")
    p.add_argument(
        "--sim-nodes", type=int, default=10_000, help="simulated agents in the idle scenario (0: none)"
    )
    p.add_argument("--sim-procs", type=int, default=1, help="processes of bench/simagents.py in idle")
    p.add_argument("--sim-step", type=int, default=1_000, help="idle: the simulated pool grows by this many")
    p.add_argument("--idle-interval", type=float, default=60.0, help="quiet window measured in idle")
    p.add_argument("--idle-skip-real", action="store_true", help="idle: only the simulated agents")
    p.add_argument("--slurm-reps", type=int, default=3, help="Slurm array repetitions (median reported)")
    p.add_argument("--no-slurm", action="store_true", help="skip the Slurm baseline")
    p.add_argument("--profile", action="store_true", help="py-spy the server during each measured phase")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    p.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="where the servers' data directories go (default: the temp dir). On ext4 without a journal, creating "
        "files within minutes of deleting many costs far more kernel time (ext4 skips recently deleted inodes "
        "one by one): use a tmpfs such as /dev/shm to measure without the previous run's deletions",
    )
    a = p.parse_args(argv)

    names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    date = time.strftime("%Y-%m-%d")
    tmp = Path(tempfile.mkdtemp(prefix="batchyard-bench-", dir=a.data_root))
    profile_dir = a.results / "profiles" / date if a.profile else None
    bench = scenarios.Bench(
        quick=a.quick,
        tmp=tmp,
        profile_dir=profile_dir,
        dispatch_tasks=a.dispatch_tasks,
        dispatch_slots=a.dispatch_slots,
        scale_tasks=a.scale_tasks,
        scale_budget=a.scale_budget,
        scale_connections=a.scale_connections,
        scale_store=a.scale_store,
        nodes=a.nodes,
        nodes_interval=a.nodes_interval,
        idle_nodes=a.idle_nodes,
        sim_nodes=a.sim_nodes,
        sim_procs=a.sim_procs,
        sim_step=a.sim_step,
        idle_interval=a.idle_interval,
        skip_real=a.idle_skip_real,
        slurm_reps=a.slurm_reps,
        no_slurm=a.no_slurm,
        keep=a.keep,
    )
    machine = machine_info(slurm_version())
    print(
        f"batchyard bench {date}: {machine['nproc']} cpus ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"python {machine['python']}, batchyard {machine['batchyard']}, azure-batch {machine['azure-batch']}, "
        f"load {' '.join(machine['loadavg_at_start'])}",
        flush=True,
    )
    results: list[ScenarioResult] = []
    failed = False
    try:
        for name in names:
            res = ScenarioResult(name)
            res.details["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
            print(f"== {name}{' (quick)' if a.quick else ''}", flush=True)
            t = time.monotonic()
            busy = scenarios.SystemCpu().start()
            try:
                SCENARIOS[name](bench, res)
            except Exception as exc:  # one broken scenario must not lose the others' numbers
                failed = True
                res.note(f"FAILED: {type(exc).__name__}: {exc}")
                res.details["traceback"] = traceback.format_exc()
                traceback.print_exc()
            res.seconds = time.monotonic() - t
            res.details["system_busy_cores_whole_scenario"] = round(busy.stop(), 2)
            res.details["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
            results.append(res)
            machine["slurm-wlm"] = slurm_version()
            print(table([res]), flush=True)
    finally:
        bench.close()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    out = a.results / f"{date}.json"
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    write_json(out, machine, args, results)
    print()
    print(table(results))
    (a.results / f"{date}.md").write_text(markdown_table(results) + "\n")
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
