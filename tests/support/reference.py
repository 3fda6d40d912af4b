"""Finding the read-only reference material (`shared/`) that CI places beside the checkout.

The OpenAPI spec is Microsoft's, kept in `shared/reference/` with its provenance; it is read from there,
not vendored (its README asks that it not be copied into the product, and its licence text could not be
confirmed). CI has `../shared` next to the repository; a developer's worktree may sit deeper, so the
parents are searched too, and `BATCHYARD_SHARED` overrides. Under CI=true a missing copy fails the test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = "reference/azure-batch-api/openapi/2024-07-01.20.0/BatchService.json"
# sha256 recorded in the spec's README: the file the fuzz was tuned against
SPEC_SHA256 = "915b5cd5cc014fdbebba052c4fca9be1451c3a21d7b01ff338fb2136e4f325de"


def shared_dir() -> Path | None:
    env = os.environ.get("BATCHYARD_SHARED")
    if env:
        return Path(env)
    for parent in REPO.parents:
        if (parent / "shared" / "reference").is_dir():
            return parent / "shared"
    return None


def reference_file(rel: str, sha256: str | None = None) -> Path:
    """The file under shared/, or skip (fail under CI=true) when it is not there or not the expected one."""
    base = shared_dir()
    path = base / rel if base else REPO.parent / "shared" / rel
    problem = ""
    if not path.is_file():
        problem = f"{path} is missing (expected ../shared beside the checkout, or set BATCHYARD_SHARED)"
    elif sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        problem = f"{path} is not the reviewed copy (sha256 differs from {sha256})"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference material required under CI=true: {problem}")
        pytest.skip(problem)
    return path
