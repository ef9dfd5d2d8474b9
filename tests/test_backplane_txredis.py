"""``wsplugin.backplane._txredis``: the txredisapi glue, on a
``MemoryReactorClock`` (no Redis; against a real ``redis-server`` see
``tests/integration/test_redis_backplane.py``)."""

from __future__ import annotations

import warnings
from typing import Any

import trustme
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.backplane import RedisURL
from wsplugin.errors import ConfigError

with warnings.catch_warnings():
    # txredisapi builds a set of str and bytes at import time (python -b)
    warnings.simplefilter("ignore", BytesWarning)
    from wsplugin.backplane._txredis import (
        LinkFactory,
        SubscriberProtocol,
        make_endpoint,
        open_links,
    )


class FakeConn:
    """What LinkFactory's pool needs from a connected txredisapi protocol."""

    connected = 1

    def whenDisconnected(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred()


class EndpointTests(SynchronousTestCase):
    def test_endpoint_per_scheme(self) -> None:
        """unix:// is a Unix socket, redis:// a host name endpoint, and
        rediss:// wraps it in TLS; a CA file that cannot be read is a
        ConfigError naming it."""
        reactor = MemoryReactorClock()
        unix = make_endpoint(reactor, RedisURL("unix", path="/r.sock"), 5)
        self.assertIsInstance(unix, UNIXClientEndpoint)
        tcp = make_endpoint(reactor, RedisURL("redis", "h", 6379), 5)
        self.assertIsInstance(tcp, HostnameEndpoint)
        ca = trustme.CA()
        path = self.mktemp()
        ca.cert_pem.write_to_path(path)
        tls = make_endpoint(reactor, RedisURL("rediss", "h", 6390, ca_file=path), 5)
        self.assertNotIsInstance(tls, HostnameEndpoint)
        with self.assertRaises(ConfigError) as caught:
            make_endpoint(reactor, RedisURL("rediss", "h", 1, ca_file="/nope.pem"), 5)
        self.assertIn("/nope.pem", str(caught.exception))


class OpenLinksTests(SynchronousTestCase):
    def test_two_links_report_their_role(self) -> None:
        """open_links starts a command link (which selects the database)
        and a subscriber link on one endpoint; each reports up, down and
        errors with its role, and only the subscriber link passes on
        pub/sub messages."""
        reactor = MemoryReactorClock()
        seen: list[tuple[Any, ...]] = []
        url = RedisURL("unix", path="/r.sock", db=3, password="pw")
        factories = open_links(
            reactor,
            url,
            "n.0",
            connect_timeout=5,
            reply_timeout=10,
            initial_delay=0.5,
            max_delay=10,
            on_up=lambda role, conn: seen.append(("up", role)),
            on_down=lambda role, conn: seen.append(("down", role)),
            on_error=lambda why: seen.append(("error", why)),
            on_message=lambda topic, raw: seen.append(("message", topic, raw)),
        )
        for factory in factories:
            self.addCleanup(factory.disconnect)
        cmd, sub = factories
        self.assertEqual([a for a, *_ in reactor.unixClients], ["/r.sock"] * 2)
        self.assertEqual((cmd.dbid, sub.dbid), (3, None))
        self.assertEqual(
            (cmd.password, cmd.initialDelay, cmd.maxDelay), ("pw", 0.5, 10)
        )
        self.assertIs(sub.protocol, SubscriberProtocol)
        conn = FakeConn()
        cmd.addConnection(conn)
        cmd.delConnection(conn)
        sub.connectionError("refused")
        sub.on_message(b"t", b"m")
        cmd.on_message(b"t", b"ignored")
        self.assertEqual(
            seen,
            [
                ("up", "cmd"),
                ("down", "cmd"),
                ("error", "refused"),
                ("message", b"t", b"m"),
            ],
        )
        self.assertIsInstance(cmd, LinkFactory)


class BackoffTests(SynchronousTestCase):
    def test_backoff_grows_and_is_capped(self) -> None:
        """Reconnection delays start near initial_delay, grow by about e
        per attempt, and never exceed max_delay, even with jitter and
        after a long outage (1000 attempts)."""
        factory = LinkFactory(
            "t",
            RedisURL("unix", path="/r.sock"),
            SubscriberProtocol,
            select_db=False,
            reply_timeout=10,
            initial_delay=0.5,
            max_delay=10,
            on_up=lambda conn: None,
            on_down=lambda conn: None,
            on_error=lambda why: None,
        )
        first = [factory.retryDelay(1) for _ in range(200)]
        self.assertTrue(all(0 <= d <= 1.0 for d in first), max(first))
        second = sorted(factory.retryDelay(2) for _ in range(201))[100]
        self.assertTrue(1.0 < second < 1.8, second)  # 0.5 * e = 1.36
        late = [factory.retryDelay(n) for n in range(5, 1005)]
        self.assertLessEqual(max(late), 10.0)
        self.assertGreater(sorted(late)[500], 8.0)  # at the cap, mostly


class SubscriberProtocolTests(SynchronousTestCase):
    def test_replies_are_sorted(self) -> None:
        """Pub/sub messages go to the factory; a SUBSCRIBE confirmation
        nobody waits for is dropped; other replies answer the waiting
        commands, in order."""
        messages: list[tuple[bytes, bytes]] = []

        class Factory:
            def on_message(self, topic: bytes, raw: bytes) -> None:
                messages.append((topic, raw))

        proto = SubscriberProtocol(charset=None)
        proto.factory = Factory()
        proto.replyReceived([b"message", b"t", b"payload"])
        proto.replyReceived([b"subscribe", b"t", 1])
        self.assertEqual(messages, [(b"t", b"payload")])
        self.assertEqual(len(proto.replyQueue.pending), 0)
        waiting = proto.replyQueue.get()
        proto.replyReceived([b"subscribe", b"t", 1])
        self.assertEqual(self.successResultOf(waiting), [b"subscribe", b"t", 1])
        proto.replyReceived(b"PONG")
        self.assertEqual(self.successResultOf(proto.replyQueue.get()), b"PONG")
