"""Sampling profiles of the server with py-spy, summarised as top self / inclusive functions.

py-spy writes the collapsed-stack ("raw") format, one ``frame;frame;…;frame count`` line per stack, which
speedscope (https://www.speedscope.app) and inferno/flamegraph.pl open as they are.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` attached to one pid until stop()."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.seconds = 0.0

    def start(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.started = time.monotonic()
        time.sleep(0.5)  # let it attach
        return self

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        self.seconds = time.monotonic() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return {"error": err.decode(errors="replace")[-500:]}
        summary = summarise(self.out)
        summary["seconds"] = round(self.seconds, 1)
        summary["busy_fraction"] = round(summary["samples"] / max(1.0, self.seconds * self.rate), 3)
        summary["file"] = str(self.out)
        return summary


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('fn')} ({path})"


# DB-API calls: their self time is time spent inside sqlite3 (the C library), not in SQLAlchemy's Python code
_DB_CALLS = (
    "do_execute ",
    "do_executemany ",
    "do_commit ",
    "do_rollback ",
    "fetchone ",
    "fetchall ",
    "fetchmany ",
)


def _package(frame: str) -> str:
    """'fn (pkg/mod.py)' -> the package; SQLAlchemy's DB-API calls are reported as 'sqlite3 (C)'."""
    fn, _, where = frame.rpartition(" (")
    path = where.rstrip(")")
    if path.startswith("sqlalchemy/"):
        short = fn.rsplit(".", 1)[-1] + " "
        if short in _DB_CALLS:
            return "sqlite3 (C, via DB-API)"
        return "sqlalchemy"
    if "/" in path:
        return path.split("/", 1)[0]
    if path.startswith("<frozen"):
        return "stdlib"
    return "stdlib:" + path.removesuffix(".py")


def summarise(path: Path, top: int = 30) -> dict[str, Any]:
    """Total samples, and the functions with the most self and inclusive samples (percent of samples)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        frames = [
            _short(f)
            for f in stack.split(";")
            if f and not f.startswith(("thread (", "process ", "process:"))
        ]
        if not frames:
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl_c[f] += n

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * v / total, 1)) for name, v in c.most_common(top)] if total else []

    ours = Counter({k: v for k, v in incl_c.items() if "(batchyard/" in k})
    by_package: Counter[str] = Counter()
    for name, v in self_c.items():
        by_package[_package(name)] += v
    return {
        "samples": total,
        "self_by_package": pct(by_package),
        "top_self": pct(self_c),
        "top_inclusive": pct(incl_c),
        "top_inclusive_batchyard": pct(ours),
    }
