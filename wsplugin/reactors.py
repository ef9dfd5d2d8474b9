"""Reactor choice: Twisted's epoll reactor, or its asyncio reactor on uvloop.

Twisted picks its epoll reactor on Linux by default. This module installs
the alternative measured against it in docs/performance.md ("The reactor"):
Twisted's ``AsyncioSelectorReactor`` running on uvloop's event loop (libuv,
in C). Install it before anything imports ``twisted.internet.reactor``::

    from wsplugin.reactors import install_uvloop
    install_uvloop()

    from twisted.internet import reactor  # now the asyncio reactor on uvloop

For ``twistd``, ``twistd --reactor=uvloop ws ...`` does the same (the
``twisted/plugins/wsplugin_uvloop.py`` dropin names :func:`install`).
uvloop is an optional dependency: ``pip install wsplugin[uvloop]``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["install", "install_uvloop"]


def install_uvloop() -> Any:
    """Install Twisted's asyncio reactor on a new uvloop event loop, and
    make that loop the current one; returns the reactor.

    Raises:
        ImportError: uvloop is not installed (``pip install uvloop``).
        twisted.internet.error.ReactorAlreadyInstalledError: a reactor was
            installed already (something imported ``twisted.internet.reactor``
            first).
    """
    import uvloop
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor


def install() -> None:
    """The ``twistd --reactor=uvloop`` entry point: :func:`install_uvloop`."""
    install_uvloop()
