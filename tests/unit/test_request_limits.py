"""The pure parts of request hardening: the JSON nesting scan, duration signs, the agent sync body, the
readiness check against real SQLite stores, and the server option checks."""

from __future__ import annotations

import argparse
import asyncio
import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchyard.api.agent_sync import decode_sync
from batchyard.api.health import Readiness, head_revisions
from batchyard.api.server import add_arguments, from_args
from batchyard.models import wire
from batchyard.models.decode import MAX_JSON_DEPTH, decode_body, json_depth_exceeds, validate_durations
from batchyard.models.errors import BatchError
from batchyard.store.sql import SqlStore

# --- nesting --------------------------------------------------------------------------------------------------


def _reference_depth(data: bytes) -> int:
    """Max nesting of brackets outside strings, the slow obvious way."""
    depth = best = 0
    in_str = esc = False
    for ch in data.decode("utf-8", "replace"):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"a'), kids, max_size=3),
    max_leaves=200,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, limit=st.integers(min_value=0, max_value=12))
def test_depth_scan_agrees_with_the_obvious_count_on_valid_json(value: object, limit: int) -> None:
    data = msgspec.json.encode(value)
    assert json_depth_exceeds(data, limit) == (_reference_depth(data) > limit)


@pytest.mark.parametrize(
    "data,deep",
    [
        (b"[" * 65, True),
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets inside a string do not count
        (b'["\\"' + b"[" * 1000 + b'"]', False),  # nor after an escaped quote
        (b"[]" * 100_000, False),
        (b'{"a":' * 70, True),
    ],
)
def test_depth_scan_cases(data: bytes, deep: bool) -> None:
    assert json_depth_exceeds(data) is deep


def _max_model_depth(tp: object, seen: frozenset[type]) -> int:
    """How deep a body decoded as `tp` can nest through typed fields (free-form fields count 1)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if tp in seen:
            raise AssertionError(f"{tp.__name__} is recursive")
        hints = typing.get_type_hints(tp)
        return 1 + max((_max_model_depth(h, seen | {tp}) for h in hints.values()), default=0)
    if origin in (list, dict):
        return 1 + max((_max_model_depth(a, seen) for a in args), default=0)
    if args:  # unions
        return max(_max_model_depth(a, seen) for a in args)
    return 0


@pytest.mark.parametrize("model", sorted(set(wire.REQUEST_BODIES.values()), key=lambda m: m.__name__))
def test_no_request_model_nests_near_the_limit(model: type[msgspec.Struct]) -> None:
    """Why the typed decode path needs no byte scan: a body that decodes cannot be deeper than its model."""
    assert _max_model_depth(model, frozenset()) < MAX_JSON_DEPTH // 2


# --- durations ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["-PT1H", "-P1D", "-PT0.0000001S", "-P10675199DT2H48M5.4775807S"])
def test_negative_durations_are_refused(text: str) -> None:
    obj = decode_body(
        msgspec.json.encode(
            {"id": "j", "poolInfo": {"poolId": "p"}, "constraints": {"maxWallClockTime": text}}
        ),
        wire.BatchJobCreateOptions,
    )
    with pytest.raises(BatchError) as e:
        validate_durations(obj)
    assert e.value.code == "InvalidPropertyValue"
    assert ("PropertyName", "constraints.maxWallClockTime") in e.value.values


@pytest.mark.parametrize("text", ["PT0S", "-PT0S", "PT1H", "P10675199DT2H48M5.4775807S"])
def test_zero_and_positive_durations_pass(text: str) -> None:
    obj = decode_body(
        msgspec.json.encode(
            {"id": "j", "poolInfo": {"poolId": "p"}, "constraints": {"maxWallClockTime": text}}
        ),
        wire.BatchJobCreateOptions,
    )
    validate_durations(obj)


# --- agent sync body --------------------------------------------------------------------------------------------


def test_agent_sync_body_round_trip() -> None:
    body = decode_sync(
        b'{"nodeId": "n", "pid": 7, "wait": 5, "running": ["a#0"], "events": [{"type": "completed", "ref": "a#0",'
        b' "seq": 3, "exitCode": 0, "startTime": "t", "endTime": "u", "timedOut": false,'
        b' "usage": {"user": 0.1, "kernel": 0.2, "readOps": 1, "writeOps": 2}}]}'
    )
    assert body.nodeId == "n" and body.pid == 7 and body.events[0].usage is not None
    assert msgspec.to_builtins(body.events)[0]["usage"]["readOps"] == 1


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.text(alphabet='{}[]":,0123456789.-eantrufls ').map(str.encode))
def test_agent_sync_fuzz_gives_a_body_or_a_400(data: bytes) -> None:
    try:
        decode_sync(data)
    except BatchError as e:
        assert e.status == 400


# --- readiness --------------------------------------------------------------------------------------------------


def test_readiness_follows_the_store(tmp_path: Path) -> None:
    fresh = SqlStore(f"sqlite:///{tmp_path / 'fresh.db'}")
    ready, details = asyncio.run(Readiness(fresh).check())
    assert not ready and "migration head" in details["reason"], details

    migrated = SqlStore(f"sqlite:///{tmp_path / 'migrated.db'}")
    migrated.migrate()
    ready, details = asyncio.run(Readiness(migrated).check())
    assert ready and details["storeRevision"] == sorted(head_revisions()), details

    gone = SqlStore("postgresql://nobody:secret@127.0.0.1:1/none")
    ready, details = asyncio.run(Readiness(gone, timeout=10).check())
    assert not ready and "not reachable" in details["reason"], details
    assert "secret" not in str(details)


# --- server options ---------------------------------------------------------------------------------------------


def test_server_options_are_checked() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert from_args(p.parse_args([])).header_timeout > 0
    for bad in (["--header-timeout", "0"], ["--body-timeout", "-1"], ["--max-connections", "0"]):
        with pytest.raises(ValueError):
            from_args(p.parse_args(bad))
    with pytest.raises(SystemExit):
        p.parse_args(["--log-format", "xml"])
