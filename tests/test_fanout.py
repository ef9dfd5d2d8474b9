"""wsplugin._fanout: filters applied locally, each frame encoded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import _fanout
from wsplugin._fanout import Fanout, FrameKey
from wsplugin._frames import encode_message
from wsplugin._registry import Registry


@dataclass
class Engine:
    """A connection's protocol as the fan-out sees it."""

    frame_key: FrameKey | None = (0, None)
    admits: bool = True
    broken: bool = False
    got: list[Any] = field(default_factory=list)

    def offer_prepared(self, data: bytes) -> bool:
        if self.broken:
            raise OSError("gone")
        if self.admits:
            self.got.append(data)
        return self.admits

    def offer_message(self, payload: bytes, is_binary: bool) -> bool:
        self.got.append(("own", payload, is_binary))
        return self.admits

    def held_bytes(self) -> int:
        return 0


@dataclass(eq=False)
class Member:
    """A registered connection as the fan-out sees it."""

    id: str
    channels: set[str] = field(default_factory=set)
    subprotocol: str | None = None
    engine: Engine = field(default_factory=Engine)
    envelope: bool = False


def fanout(*members: Member) -> Fanout:
    registry = Registry()
    for m in members:
        registry.add(m)  # type: ignore[arg-type]
    return Fanout(registry, Logger())


class SelectTests(SynchronousTestCase):
    """The filters, combined with AND, over this node's connections."""

    def setUp(self) -> None:
        self.a = Member("a", {"news"}, "v1")
        self.b = Member("b", set(), "v2")
        self.c = Member("c", {"news"})
        self.fan = fanout(self.a, self.b, self.c)

    def ids(self, **filters: Any) -> list[str]:
        return [m.id for m in self.fan.select(**filters)]

    def test_each_filter(self) -> None:
        """channel, subprotocol, ids (unknown ignored, repeats once), exclude."""
        self.assertEqual(self.ids(), ["a", "b", "c"])
        self.assertEqual(self.ids(channel="news"), ["a", "c"])
        self.assertEqual(self.ids(subprotocol="v2"), ["b"])
        self.assertEqual(self.ids(ids=["c", "x", "c", "a"]), ["c", "a"])
        self.assertEqual(self.ids(exclude=["a"]), ["b", "c"])
        self.assertEqual(self.ids(channel="news", exclude=["c"], ids=["a", "c"]), ["a"])


class SendTests(SynchronousTestCase):
    """Encode once per key, skip what does not take the message."""

    def test_encoded_once_per_key(self) -> None:
        """Connections sharing a key share the bytes; another key another
        encoding; a connection with its own context encodes itself."""
        calls: list[Any] = []
        original = _fanout.encode_message

        def counting(*args: Any) -> bytes:
            calls.append(args[2:])
            return original(*args)

        self.patch(_fanout, "encode_message", counting)
        plain = [Member(str(i)) for i in range(3)]
        split = Member("s", engine=Engine(frame_key=(10, None)))
        own = Member("o", engine=Engine(frame_key=None))
        fan = fanout(*plain, split, own)
        self.assertEqual(fan.send(b"x" * 30, False, fan.select()), 5)
        self.assertEqual(calls, [(0, None), (10, None)])
        self.assertIs(plain[0].engine.got[0], plain[2].engine.got[0])
        self.assertEqual(split.engine.got, [encode_message(b"x" * 30, False, 10)])
        self.assertEqual(own.engine.got, [("own", b"x" * 30, False)])

    def test_refused_and_broken_not_counted(self) -> None:
        """A connection refusing (closed, policy) is not counted; one that
        raises is logged and skipped; the others still get it."""
        ok = Member("ok")
        refusing = Member("r", engine=Engine(admits=False))
        broken = Member("b", engine=Engine(broken=True))
        fan = fanout(refusing, broken, ok)
        self.assertEqual(fan.send(b"m", True, fan.select()), 1)
        self.assertEqual(len(ok.engine.got), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_selector(self) -> None:
        """send_selected: the connections a predicate picks."""
        a, b = Member("a"), Member("b")
        fan = fanout(a, b)
        self.assertEqual(fan.send_selected(b"x", False, lambda c: c.id == "b"), 1)
        self.assertEqual((a.engine.got, len(b.engine.got)), ([], 1))

    def test_deliver_publication(self) -> None:
        """A publication from another node (the backplane's entry point):
        its filters apply to this node's connections."""

        @dataclass
        class Publication:
            channel: str | None
            data: bytes
            is_binary: bool = False
            protocol: str | None = None
            ids: tuple[str, ...] | None = None
            exclude: tuple[str, ...] = ()

        a = Member("a", {"room"}, "chat")
        b = Member("b", {"room"})
        c = Member("c", set(), "chat")
        fan = fanout(a, b, c)
        self.assertEqual(fan.deliver(Publication("room", b"hi", protocol="chat")), 1)
        self.assertEqual(fan.deliver(Publication(None, b"all", exclude=("b",))), 2)
        self.assertEqual(
            (len(a.engine.got), len(b.engine.got), len(c.engine.got)), (2, 0, 1)
        )
