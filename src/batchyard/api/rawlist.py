"""List pages assembled from stored JSON: a task's body is spliced into the response as it is stored when
nothing would change it (no `$select`, nothing the client's api-version renders differently, no internal or
relative-URL properties), so a page of 1,000 tasks is not decoded and re-encoded. Any other body takes the
ordinary path, item by item; the bytes clients parse are the same either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from batchyard.models import versions as versions_model
from batchyard.service.common import item

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

# keys the ordinary path rewrites: internal bookkeeping ('_…'), the item's url, and the relative urls that
# become absolute (api.render.absolute)
_REWRITTEN = ('"_', '"url":', '"stats":', '"nodeInfo":', '"recentTasks":')


def needles(root: str, version: str) -> tuple[str, ...] | None:
    """Substrings whose presence sends a stored body down the ordinary path; None: every body does."""
    keys = versions_model.render_keys(root, version) if version in versions_model.ACCEPTED else None
    if keys is None:
        return None
    return _REWRITTEN + tuple(f'"{k}":' for k in sorted(keys))


def page_bytes(
    meta: str,
    rows: list[tuple[str, str]],
    url_of: Callable[[str], str],
    slow: Callable[[dict[str, Any]], dict[str, Any]],
    skip: tuple[str, ...],
    next_link: str | None,
) -> bytes:
    """The list response: {"odata.metadata", "value": [...], "odata.nextLink"?}, as `_list` encodes it."""
    parts = [b'{"odata.metadata":', _enc.encode(meta), b',"value":[']
    first = True
    for task_id, text in rows:
        if not first:
            parts.append(b",")
        first = False
        if text.endswith("}") and len(text) > 2 and not any(n in text for n in skip):
            parts.append(text[:-1].encode())
            parts.append(b',"url":')
            parts.append(_enc.encode(url_of(task_id)))
            parts.append(b"}")
        else:
            parts.append(_enc.encode(slow(item({"body": _dec.decode(text)}))))
    parts.append(b"]")
    if next_link is not None:
        parts.append(b',"odata.nextLink":')
        parts.append(_enc.encode(next_link))
    parts.append(b"}")
    return b"".join(parts)
