"""What keeps a node agent small: it starts without ``site`` or TLS and loads the rest only when a node needs it.

The local provider starts agents with ``python -S`` and names the directories of batchyard and of the agent's
own dependencies in ``PYTHONPATH`` (decision 0182): an idle agent then imports a few stdlib modules and h11,
not the ``.pth`` hooks of every installed package. Features that talk to the outside world (data staging with
the Azure SDK, application package downloads) first call `full_site`, which completes the start-up the
interpreter skipped — the documented ``site.main()`` — so they run exactly as in a normal interpreter.

asyncio imports ``ssl`` (and with it OpenSSL, ~4 MiB of a node's memory) though an agent speaks plain HTTP to its
server. `hide_tls` makes that import fail before asyncio is loaded — asyncio itself expects ``ssl`` may be
missing — and `allow_tls` loads it and hands it to asyncio's modules, as their own imports would have, before
anything may open a TLS connection (staging, a server URL with https).
"""

from __future__ import annotations

import sys

_done = False


def full_site() -> None:
    """Run the ``site`` start-up once if the interpreter skipped it (``-S``), and give TLS back."""
    global _done
    if _done:
        return
    _done = True
    if sys.flags.no_site:
        import site

        site.main()
    allow_tls()


#: asyncio's modules that bind ``ssl`` (``None`` when it was missing) at import
_ASYNCIO_TLS_MODULES = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def hide_tls() -> None:
    """Before asyncio is first imported: its ``import ssl`` fails, which it handles (``ssl = None``)."""
    if "ssl" not in sys.modules and "asyncio" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # the documented way to make an import fail


def allow_tls() -> None:
    """Undo `hide_tls`: import ``ssl`` and give it to the asyncio modules that saw it missing."""
    if "ssl" not in sys.modules or sys.modules["ssl"] is not None:
        return
    del sys.modules["ssl"]
    import ssl

    for name in _ASYNCIO_TLS_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            setattr(module, "ssl", ssl)  # noqa: B010 - what the module's own import would have bound
