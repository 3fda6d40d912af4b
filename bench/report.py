"""Result rows, the printed table, machine information and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: batchyard's figure, its baselines, the ratios and the target."""

    scenario: str
    metric: str
    unit: str
    value: float | None
    baselines: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    seconds: float = 0.0

    def row(self, metric: str, unit: str, value: float | None, **kw: Any) -> Row:
        r = Row(self.name, metric, unit, value, **kw)
        self.rows.append(r)
        return r

    def note(self, text: str) -> None:
        print(f"  [{self.name}] {text}", flush=True)
        self.notes.append(text)


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if unit in ("ms", "s") and abs(v) < 10:
        s = f"{v:.2f}" if abs(v) < 1 else f"{v:.1f}"
    elif abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def table(results: list[ScenarioResult]) -> str:
    head = ["scenario", "metric", "batchyard", "baseline(s)", "ratio", "target", "met?"]
    lines: list[list[str]] = []
    for res in results:
        for r in res.rows:
            base = "; ".join(f"{k} {fmt(v, r.unit)}" for k, v in r.baselines.items()) or "-"
            ratio = "; ".join(f"{v:.3g}x {k}" for k, v in r.ratios.items()) or "-"
            met = "-" if r.met is None else ("yes" if r.met else "NO")
            value = fmt(r.value, r.unit) + (f" ({r.note})" if r.note else "")
            lines.append([r.scenario, r.metric, value, base, ratio, r.target or "-", met])
        for n in res.notes:
            if n.startswith(("skipped", "not available")):
                lines.append([res.name, n, "", "", "", "", ""])
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=False)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    for ln in lines:
        out.append(" | ".join(c.ljust(w) for c, w in zip(ln, widths, strict=True)))
    return "\n".join(out)


def markdown_table(results: list[ScenarioResult]) -> str:
    out = [
        "| scenario | metric | batchyard | baseline(s) | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res.rows:
            base = "; ".join(f"{k} {fmt(v, r.unit)}" for k, v in r.baselines.items()) or "–"
            ratio = "; ".join(f"{v:.3g}× {k}" for k, v in r.ratios.items()) or "–"
            met = "–" if r.met is None else ("yes" if r.met else "**no**")
            value = fmt(r.value, r.unit) + (f" ({r.note})" if r.note else "")
            out.append(
                f"| {r.scenario} | {r.metric} | {value} | {base} | {ratio} | {r.target or '–'} | {met} |"
            )
        for n in res.notes:
            if n.startswith(("skipped", "not available")):
                out.append(f"| {res.name} | {n} | | | | | |")
    return "\n".join(out)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(slurm_version: str | None) -> dict[str, Any]:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": mem,
        "memory_gib": round(mem / 2**30, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": sys.version.split()[0],
        "batchyard": _version("batchyard"),
        "azure-batch": _version("azure-batch"),
        "azure-core": _version("azure-core"),
        "httpx": _version("httpx"),
        "uvicorn": _version("uvicorn"),
        "sqlalchemy": _version("SQLAlchemy"),
        "slurm-wlm": slurm_version,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "source": _source_revision(),
    }


def _source_revision() -> str | None:
    """The checked-out commit, read from .git without running git (the working tree may differ from it)."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            p = git / ref
            if p.exists():
                return f"{ref.rsplit('/', 1)[-1]}@{p.read_text().strip()[:12]}"
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return f"{ref.rsplit('/', 1)[-1]}@{line[:12]}"
            return ref
        return head[:12]
    except OSError:
        return None


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def write_json(
    path: Path, machine: dict[str, Any], args: dict[str, Any], results: list[ScenarioResult]
) -> None:
    """Write (or update) the day's file: scenarios run now replace the same scenarios of an earlier run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    scen = data.get("scenarios", {})
    for res in results:
        scen[res.name] = {
            "started": res.started,
            "seconds": round(res.seconds, 1),
            "args": args,
            "machine": machine,
            "rows": [asdict(r) for r in res.rows],
            "notes": res.notes,
            "details": res.details,
        }
    data["machine"] = machine
    data["scenarios"] = scen
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
