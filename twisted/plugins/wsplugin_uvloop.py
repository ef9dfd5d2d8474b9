"""twistd dropin: ``twistd --reactor=uvloop ws ...`` runs Twisted's asyncio
reactor on uvloop's event loop (``pip install wsplugin[uvloop]``; see
docs/performance.md, "The reactor")."""

from twisted.application.reactors import Reactor

uvloop = Reactor(
    "uvloop",
    "wsplugin.reactors",
    "asyncio reactor on uvloop's event loop (pip install uvloop)",
)
