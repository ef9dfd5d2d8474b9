"""Fakes shared by the backplane's unit tests: receivers, txredisapi links
whose replies the test releases one by one, and messages as Redis sends them."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from wsplugin.backplane import Command, Publication
from wsplugin.backplane._types import encode_publication


class Recorder:
    """A receiver recording publications and commands."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.cmds: list[Command] = []

    def deliver(self, publication: Publication) -> None:
        self.pubs.append(publication)

    def command(self, command: Command) -> None:
        self.cmds.append(command)


class Exploding:
    """A receiver that raises on everything."""

    def deliver(self, publication: Publication) -> None:
        raise RuntimeError("boom")

    def command(self, command: Command) -> None:
        raise RuntimeError("boom")


class LinkLost(Exception):
    """Stands for txredisapi's ConnectionError: the link is not connected."""


class FakeLink:
    """Stands for a txredisapi protocol: records commands; the test fires
    their replies, in any order it likes. With ``broken`` set, every command
    raises :class:`LinkLost` at once, as a link that just went down does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []
        self.broken = False

    def _call(self, name: str, *args: Any) -> Deferred[Any]:
        if self.broken:
            raise LinkLost("not connected")
        d: Deferred[Any] = Deferred()
        self.calls.append((name, args, d))
        return d

    def ping(self) -> Deferred[Any]:
        return self._call("PING")

    def subscribe(self, topic: str) -> Deferred[Any]:
        return self._call("SUBSCRIBE", topic)

    def unsubscribe(self, topic: str) -> Deferred[Any]:
        return self._call("UNSUBSCRIBE", topic)

    def eval(self, script: str, keys: list[str], args: list[Any]) -> Deferred[Any]:
        return self._call("EVAL", script, keys, args)

    def execute_command(self, *args: Any) -> Deferred[Any]:
        return self._call(*args)

    def pop(self, name: str) -> tuple[tuple[Any, ...], Deferred[Any]]:
        """The oldest unanswered command called ``name``."""
        for i, (n, args, d) in enumerate(self.calls):
            if n == name:
                del self.calls[i]
                return args, d
        raise AssertionError(f"no {name} pending; calls: {self.calls}")

    def names(self) -> list[str]:
        return [n for n, _, _ in self.calls]

    def confirm(self) -> None:
        """Redis confirms every SUBSCRIBE sent so far."""
        while "SUBSCRIBE" in self.names():
            (topic,), d = self.pop("SUBSCRIBE")
            d.callback([b"subscribe", topic.encode(), 1])


class FakeFactory:
    """Stands for a txredisapi LinkFactory: counts disconnects."""

    def __init__(self) -> None:
        self.disconnects = 0

    def disconnect(self) -> Deferred[None]:
        self.disconnects += 1
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


class FakeOpener:
    """Replaces ``open_links``: keeps the hooks the links would call, so a
    test plays txredisapi (``up("cmd", link)``, ``message(topic, raw)``)."""

    def __init__(self) -> None:
        self.hooks: dict[str, Any] = {}
        self.factories: list[FakeFactory] = []

    def __call__(self, **hooks: Any) -> list[Any]:
        self.hooks = hooks
        self.factories = [FakeFactory(), FakeFactory()]
        return list(self.factories)

    def up(self, role: str, link: FakeLink) -> None:
        self.hooks["on_up"](role, link)

    def down(self, role: str, link: FakeLink) -> None:
        self.hooks["on_down"](role, link)

    def error(self, why: str) -> None:
        self.hooks["on_error"](why)

    def message(self, topic: bytes, raw: bytes) -> None:
        self.hooks["on_message"](topic, raw)


def live(offset: int, body: bytes = b"", channel: str = "c", epoch: str = "E") -> bytes:
    """A channel message as the publish script sends it."""
    pub = Publication(channel, body or b"%d" % offset, origin="a.0")
    return b"%d %s\n" % (offset, epoch.encode()) + encode_publication(pub)


def entries(*offsets: int, channel: str = "c") -> list[Any]:
    """History entries as the recover script returns them."""
    return [
        [
            b"%d-0" % o,
            [b"m", encode_publication(Publication(channel, b"%d" % o, origin="a.0"))],
        ]
        for o in offsets
    ]
