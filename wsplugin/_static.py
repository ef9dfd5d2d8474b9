"""Static files for the same-port site: :class:`StaticFiles` (safe defaults
over ``twisted.web.static.File``) and :class:`EmptyPage` (a status code and
an empty body)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["EmptyPage", "File", "StaticFiles"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")

with warnings.catch_warnings():
    # twisted.web.static builds its default 404/403 pages with classes Twisted
    # itself deprecated, at import time; nothing of ours uses them.
    warnings.filterwarnings(
        "ignore",
        message=r"twisted\.web\.resource\._Unsafe",
        category=DeprecationWarning,
    )
    from twisted.web.static import File


class EmptyPage(Resource):
    """An answer with a status code and an empty body (sgc "404 without body")."""

    isLeaf = True

    def __init__(self, code: int, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__()
        self.code = code
        self.headers = headers or {}

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        request.setHeader(b"content-length", b"0")
        return b""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self


class StaticFiles(File):
    """``twisted.web.static.File`` with safe defaults for a public directory.

    ``File`` as it is follows symbolic links wherever they point (a link to
    ``..`` serves the parent directory, password files included), lists any
    directory without an ``index.html``, and serves dotfiles (``.env``,
    ``.git/``, ``.htpasswd``). Here each is off unless turned on:

    Args:
        path: The directory (or file) to serve.
        listing: List the content of directories that have no index file.
            Off: such a directory gets 403.
        dotfiles: Serve names starting with ``.``, at any depth. Off: 404.
        follow_symlinks: Serve paths whose real location (symbolic links
            resolved, :func:`os.path.realpath`) is outside the served
            directory. Off: 404. Links that stay inside are always followed.

    Everything else (content types, ``Range`` requests, index files) is
    ``File``'s own behaviour.
    """

    def __init__(
        self,
        path: str,
        defaultType: str = "text/html",
        ignoredExts: Any = (),
        registry: Any = None,
        *,
        listing: bool = False,
        dotfiles: bool = False,
        follow_symlinks: bool = False,
    ) -> None:
        super().__init__(path, defaultType, ignoredExts, registry)
        self.listing = listing
        self.dotfiles = dotfiles
        self.follow_symlinks = follow_symlinks
        self.root = os.path.realpath(path)

    def getChild(self, path: bytes, request: Request) -> Any:
        """A file or directory under this one, unless a default forbids it."""
        if not self.dotfiles and path.startswith(b"."):
            return self.childNotFound
        child = super().getChild(path, request)
        if (
            isinstance(child, File)
            and not self.follow_symlinks
            and not _inside(child.path, self.root)
        ):
            _log.info(
                "static: {path!r} resolves outside {root!r}: 404",
                path=child.path,
                root=self.root,
            )
            return self.childNotFound
        return child

    def directoryListing(self) -> Any:
        """The listing when ``listing`` is on; 403 otherwise."""
        if self.listing:
            return super().directoryListing()
        if isinstance(self.childNotFound, EmptyPage):
            return EmptyPage(403)
        from twisted.web.pages import forbidden

        return forbidden("Forbidden", "Directory listing is off.")

    def createSimilarFile(self, path: str) -> Any:
        """A file under this one, with the same options and root."""
        similar = super().createSimilarFile(path)
        similar.listing = self.listing
        similar.dotfiles = self.dotfiles
        similar.follow_symlinks = self.follow_symlinks
        similar.root = self.root
        return similar


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)
