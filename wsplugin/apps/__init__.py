"""Demo applications served by ``twistd ws --app NAME``.

``echo`` answers every message, frame, ping and close in whatever mode the
server runs; ``chat`` is the broadcast chat of the FPC ``broadcastServer``
example. :func:`load_app` also resolves ``module:attr`` names.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["APPS", "AppNotFound", "load_app"]

APPS = {
    "echo": "wsplugin.apps.echo:Echo",
    "chat": "wsplugin.apps.chat:Chat",
}


class AppNotFound(ValueError):
    """``--app`` names nothing importable; the message says what was wrong."""


def load_app(name: str) -> Any:
    """Return a handler for ``name``: ``echo``, ``chat``, or ``module:attr``.

    A class is instantiated without arguments; any other object is used as
    the handler as it is.

    Raises:
        AppNotFound: unknown name, module or attribute.
    """
    target = APPS.get(name, name)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AppNotFound(
            f"unknown app {name!r}: use one of {', '.join(sorted(APPS))} or "
            "module:attribute"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AppNotFound(
            f"cannot import module {module_name!r} for app {name!r}: {e}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppNotFound(
                f"module {module_name!r} has no attribute {attr!r}"
            ) from None
    if isinstance(obj, type):
        obj = obj()
    return obj
