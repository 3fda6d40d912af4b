"""Conformance tests pass files between the test and its tasks (pid files, go markers) through ``tmp_path``.

Run as root, tasks run as their node's own user (decision 0010) and cannot reach pytest's temp dirs (root's,
0700), so here ``tmp_path`` is a fresh world-writable, sticky directory under ``/tmp`` instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="batchyard-conf-", dir="/tmp"))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
