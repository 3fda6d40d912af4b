"""Run `batchyard server` with every SQL statement and commit counted (a profiling aid, used by --profile).

    python bench/sqlcount.py DUMP_FILE server --port … --data-dir …

On SIGUSR1 the counts so far are written to DUMP_FILE as JSON: {"statements": {shape: n}, "rows": {shape: n},
"commits": n}. A statement's shape is its SQL with the column lists elided. `rows` counts the parameter sets
of executemany calls. Take a dump before and after a measured phase and subtract.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

_statements: Counter[str] = Counter()
_rows: Counter[str] = Counter()
_commits = [0]
_SELECT_COLS = re.compile(r"^SELECT .*? FROM ", re.S)
_VALUES = re.compile(r"\(([^()]*)\) VALUES \(([^()]*)\)", re.S)
_SET = re.compile(r" SET .*? WHERE ", re.S)


def shape(sql: str) -> str:
    s = " ".join(sql.split())
    s = _SELECT_COLS.sub("SELECT … FROM ", s)
    s = _VALUES.sub("(…) VALUES (…)", s)
    s = _SET.sub(" SET … WHERE ", s)
    return s[:160]


def _before(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    k = shape(statement)
    _statements[k] += 1
    _rows[k] += len(parameters) if executemany and parameters is not None else 1


def _commit(conn: Connection) -> None:
    _commits[0] += 1


def _dump(path: Path) -> None:
    data = {"statements": dict(_statements), "rows": dict(_rows), "commits": _commits[0]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main() -> None:
    dump = Path(sys.argv[1])
    event.listen(Engine, "before_cursor_execute", _before)
    event.listen(Engine, "commit", _commit)

    def on_usr1(_sig: int, _frame: FrameType | None) -> None:
        _dump(dump)

    signal.signal(signal.SIGUSR1, on_usr1)
    from batchyard.cli.main import main as batchyard_main

    batchyard_main(sys.argv[2:])


if __name__ == "__main__":
    main()
