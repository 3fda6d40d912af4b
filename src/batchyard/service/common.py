"""Small helpers every resource module uses: row shaping and public bodies."""

from __future__ import annotations

from typing import Any

from batchyard.store.sql import Row

Body = dict[str, Any]


def public(body: Body) -> Body:
    """Drop internal bookkeeping (keys starting with '_') before a body leaves the service."""
    return {k: v for k, v in body.items() if not k.startswith("_")}


def stamp_body(body: Body, etag: str, now_text: str) -> None:
    body["eTag"] = etag
    body["lastModified"] = now_text


def set_state(body: Body, state: str, now_text: str) -> None:
    """Move to a new state, remembering the previous one as the service reports it."""
    old = body.get("state")
    if old == state:
        return
    if old is not None:
        body["previousState"] = old
        body["previousStateTransitionTime"] = body.get("stateTransitionTime", now_text)
    body["state"] = state
    body["stateTransitionTime"] = now_text


def item(row: Row) -> Body:
    return public(row["body"])
