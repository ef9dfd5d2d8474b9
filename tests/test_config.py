"""The validated, frozen server configuration (wsplugin.config)."""

from __future__ import annotations

import dataclasses
import math

from twisted.trial.unittest import SynchronousTestCase

from wsplugin.config import MiB, ServerConfig
from wsplugin.errors import ConfigError

BOOL_FIELDS = (
    "frame_by_frame",
    "assemble_messages",
    "skip_upgrade_check",
    "skip_version_check",
    "manual_pong",
    "manual_close",
    "split_message",
    "compression",
    "compression_context_takeover",
    "utf8_validation",
    "connection_log",
)
INT_FIELDS = (
    "frame_size",
    "max_message_size",
    "max_frame_size",
    "max_request_head",
    "max_headers",
    "max_connections",
    "max_connections_per_ip",
    "max_request_body",
    "max_send_buffer",
    "watchdog_attempts",
    "trusted_proxies",
)
# ints that must be at least 1 (0 would not mean "off")
POSITIVE_INT_FIELDS = ("max_queue",)
FLOAT_FIELDS = (
    "open_handshake_timeout",
    "close_handshake_timeout",
    "shutdown_timeout",
    "heartbeat_interval",
    "heartbeat_timeout",
    "idle_timeout",
    "watchdog_interval",
    "request_body_timeout",
)


class DefaultsTests(SynchronousTestCase):
    """The defaults are the documented, bounded values."""

    def test_limits_bounded(self) -> None:
        """Every limit is on (> 0) by default."""
        config = ServerConfig()
        limits = {
            name: getattr(config, name)
            for name in (
                "max_message_size",
                "max_frame_size",
                "max_request_head",
                "max_headers",
                "open_handshake_timeout",
                "close_handshake_timeout",
                "max_connections",
            )
        }
        self.assertEqual([n for n, v in limits.items() if not v > 0], [])

    def test_default_values(self) -> None:
        """The defaults are the documented values."""
        config = ServerConfig()
        self.assertEqual(
            (
                config.max_message_size,
                config.max_frame_size,
                config.max_request_head,
                config.max_headers,
                config.open_handshake_timeout,
                config.close_handshake_timeout,
                config.max_connections,
                config.max_queue,
                config.shutdown_timeout,
                config.frame_size,
            ),
            (16 * MiB, 16 * MiB, 16384, 100, 10.0, 5.0, 20000, 32, 5.0, 4096),
        )

    def test_options_off_by_default(self) -> None:
        """Component options are off; UTF-8 validation is on; the watchdog and
        idle timeout are off; any origin; no subprotocols; "wsplugin" Server
        header."""
        config = ServerConfig()
        self.assertEqual(
            {name: getattr(config, name) for name in BOOL_FIELDS},
            {name: name == "utf8_validation" for name in BOOL_FIELDS},
        )
        self.assertEqual(config.watchdog_interval, 0.0)
        self.assertEqual(config.idle_timeout, 0.0)
        self.assertEqual(config.watchdog_attempts, 0)
        self.assertIsNone(config.allowed_origins)  # the per-route default policy
        self.assertEqual(config.subprotocols, ())
        self.assertEqual(config.server_header, "wsplugin")
        self.assertEqual(config.max_connections_per_ip, 1000)
        self.assertEqual(config.per_ip_exempt, ("127.0.0.0/8", "::1/128"))
        self.assertEqual(config.max_request_body, MiB)
        self.assertEqual(config.request_body_timeout, 30.0)

    def test_field_groups_complete(self) -> None:
        """This module's field lists cover every option, so the type tests below
        check every field."""
        self.assertEqual(
            set(ServerConfig.option_names()),
            set(BOOL_FIELDS + INT_FIELDS + POSITIVE_INT_FIELDS + FLOAT_FIELDS)
            | {
                "allowed_origins",
                "subprotocols",
                "server_header",
                "send_buffer_policy",
                "per_ip_exempt",
            },
        )

    def test_option_names_in_order(self) -> None:
        """option_names lists the fields in declaration order."""
        names = list(ServerConfig.option_names())
        self.assertEqual(names[0], "frame_by_frame")
        self.assertEqual(names[-1], "server_header")
        self.assertEqual(names, [f.name for f in dataclasses.fields(ServerConfig)])

    def test_keyword_only(self) -> None:
        """Options cannot be passed by position."""
        self.assertRaises(TypeError, ServerConfig, True)


class FrozenTests(SynchronousTestCase):
    """A config cannot change after construction."""

    def test_assignment_raises(self) -> None:
        """Setting an attribute raises FrozenInstanceError and changes nothing."""
        config = ServerConfig()
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, config, "max_headers", 5
        )
        self.assertEqual(config.max_headers, 100)

    def test_delete_raises(self) -> None:
        """Deleting an attribute raises FrozenInstanceError."""
        config = ServerConfig()
        self.assertRaises(dataclasses.FrozenInstanceError, delattr, config, "max_queue")
        self.assertEqual(config.max_queue, 32)

    def test_hashable_and_equal(self) -> None:
        """Equal configs compare and hash equal."""
        a = ServerConfig(allowed_origins=["https://a"])
        b = ServerConfig(allowed_origins=("https://a",))
        self.assertEqual(a, b)
        self.assertEqual(hash(a), hash(b))


class ReplaceTests(SynchronousTestCase):
    """replace returns a validated copy."""

    def test_replace_copies(self) -> None:
        """replace changes the named options only and leaves the original alone."""
        base = ServerConfig()
        new = base.replace(max_headers=7, compression=True)
        self.assertEqual((new.max_headers, new.compression), (7, True))
        self.assertEqual((base.max_headers, base.compression), (100, False))
        self.assertEqual(new.max_queue, base.max_queue)

    def test_replace_nothing(self) -> None:
        """replace without changes gives an equal config."""
        base = ServerConfig(max_queue=3)
        self.assertEqual(base.replace(), base)

    def test_unknown_names(self) -> None:
        """Unknown names are a ConfigError naming each of them, sorted."""
        exc = self.assertRaises(
            ConfigError, ServerConfig().replace, max_size=1, bogus=2, max_headers=3
        )
        self.assertIn("unknown option(s): bogus, max_size;", str(exc))
        self.assertNotIn("max_headers", str(exc))

    def test_config_error_is_value_error(self) -> None:
        """ConfigError is a ValueError for callers catching that."""
        self.assertRaises(ValueError, ServerConfig().replace, nope=1)

    def test_replace_validates(self) -> None:
        """replace validates the new values like the constructor."""
        exc = self.assertRaises(ConfigError, ServerConfig().replace, max_headers=-1)
        self.assertIn("max_headers", str(exc))

    def test_replace_validates_combination(self) -> None:
        """replace checks cross-field rules against the existing values."""
        base = ServerConfig(split_message=True, frame_size=3)
        self.assertRaises(ConfigError, base.replace, frame_size=2)
        unsplit = ServerConfig(frame_size=2)  # fine while split_message is off
        self.assertRaises(ConfigError, unsplit.replace, split_message=True)

    def test_from_options(self) -> None:
        """from_options builds a config and rejects unknown names."""
        self.assertEqual(ServerConfig.from_options(max_queue=9).max_queue, 9)
        exc = self.assertRaises(ConfigError, ServerConfig.from_options, maxqueue=9)
        self.assertIn("maxqueue", str(exc))

    def test_unknown_constructor_keyword(self) -> None:
        """The constructor rejects unknown keywords (TypeError)."""
        self.assertRaises(TypeError, ServerConfig, bogus=1)


class BoolFieldTests(SynchronousTestCase):
    """Boolean options take only True or False."""

    def test_accept_bools(self) -> None:
        """True and False are kept as given."""
        for name in BOOL_FIELDS:
            # assemble_messages is an option of frame_by_frame
            extra = {"frame_by_frame": True} if name == "assemble_messages" else {}
            for value in (True, False):
                config = ServerConfig(**{name: value}, **extra)
                self.assertIs(getattr(config, name), value)

    def test_reject_non_bools(self) -> None:
        """1, 0, "yes" and None are a ConfigError naming the option."""
        for name in BOOL_FIELDS:
            for value in (1, 0, "yes", None):
                exc = self.assertRaises(ConfigError, ServerConfig, **{name: value})
                self.assertIn(name, str(exc))


class IntFieldTests(SynchronousTestCase):
    """Integer options take integers >= 0, not bools or floats."""

    def test_accept_zero_and_positive(self) -> None:
        """0 (limit off) and positive integers are kept."""
        for name in INT_FIELDS:
            for value in (0, 1, 10**12):
                config = ServerConfig(**{name: value})
                self.assertEqual(getattr(config, name), value)
                self.assertIs(type(getattr(config, name)), int)

    def test_reject_negative(self) -> None:
        """A negative integer is a ConfigError naming the option."""
        for name in INT_FIELDS:
            exc = self.assertRaises(ConfigError, ServerConfig, **{name: -1})
            self.assertIn(name, str(exc))

    def test_reject_bool(self) -> None:
        """True and False are not integers here."""
        for name in INT_FIELDS:
            for value in (True, False):
                self.assertRaises(ConfigError, ServerConfig, **{name: value})

    def test_reject_float_and_other(self) -> None:
        """Floats (even integral ones), strings and None are rejected."""
        for name in INT_FIELDS:
            for value in (1.0, 1.5, "10", None):
                self.assertRaises(ConfigError, ServerConfig, **{name: value})


class FloatFieldTests(SynchronousTestCase):
    """Number-of-seconds options take ints or floats >= 0, stored as float."""

    def test_accept_int(self) -> None:
        """An int is accepted and stored as a float."""
        for name in FLOAT_FIELDS:
            # heartbeat_timeout needs an interval
            config = ServerConfig(**{"heartbeat_interval": 1, name: 3})
            self.assertEqual(getattr(config, name), 3.0)
            self.assertIs(type(getattr(config, name)), float)

    def test_accept_float_and_zero(self) -> None:
        """Floats and 0 are kept."""
        for name in FLOAT_FIELDS:
            for value in (0, 0.0, 0.25):
                options = {"heartbeat_interval": 1, "heartbeat_timeout": 0, name: value}
                config = ServerConfig(**options)
                self.assertEqual(getattr(config, name), float(value))

    def test_reject_nan(self) -> None:
        """NaN is a ConfigError naming the option."""
        for name in FLOAT_FIELDS:
            exc = self.assertRaises(ConfigError, ServerConfig, **{name: math.nan})
            self.assertIn(name, str(exc))

    def test_reject_negative(self) -> None:
        """Negative numbers are a ConfigError naming the option."""
        for name in FLOAT_FIELDS:
            for value in (-1, -0.5, -math.inf):
                exc = self.assertRaises(ConfigError, ServerConfig, **{name: value})
                self.assertIn(name, str(exc))

    def test_reject_bool_and_other(self) -> None:
        """Bools, strings and None are not numbers here."""
        for name in FLOAT_FIELDS:
            for value in (True, False, "1", None):
                self.assertRaises(ConfigError, ServerConfig, **{name: value})

    def test_huge_int_is_config_error(self) -> None:
        """An int too large for a float is a ConfigError (the documented error
        for a bad value), not an OverflowError."""
        exc = self.assertRaises(
            ConfigError, ServerConfig().replace, open_handshake_timeout=10**400
        )
        self.assertIn("open_handshake_timeout", str(exc))


class CrossFieldTests(SynchronousTestCase):
    """Rules between options."""

    def test_split_message_frame_size(self) -> None:
        """split_message needs a frame_size of at least 3."""
        for size in (0, 1, 2):
            exc = self.assertRaises(
                ConfigError, ServerConfig, split_message=True, frame_size=size
            )
            self.assertIn("frame_size", str(exc))
        self.assertEqual(ServerConfig(split_message=True, frame_size=3).frame_size, 3)

    def test_small_frame_size_without_split(self) -> None:
        """frame_size is not checked against 3 while split_message is off."""
        self.assertEqual(ServerConfig(frame_size=0).frame_size, 0)

    def test_heartbeat_off_whatever_the_timeout(self) -> None:
        """heartbeat_interval=0 turns keep-alive off; the timeout is unused."""
        config = ServerConfig(heartbeat_interval=0)
        self.assertEqual((config.heartbeat_interval, config.heartbeat_timeout), (0, 20))
        config = ServerConfig(heartbeat_interval=10, heartbeat_timeout=5)
        self.assertEqual((config.heartbeat_interval, config.heartbeat_timeout), (10, 5))

    def test_heartbeat_interval_alone(self) -> None:
        """An interval without a timeout is fine (ping, never drop)."""
        config = ServerConfig(heartbeat_interval=2, heartbeat_timeout=0)
        self.assertEqual(config.heartbeat_timeout, 0.0)

    def test_max_queue_at_least_one(self) -> None:
        """max_queue 0 would pause reading after every message: refused."""
        for name in POSITIVE_INT_FIELDS:
            self.assertRaises(ConfigError, ServerConfig, **{name: 0})
            self.assertEqual(getattr(ServerConfig(**{name: 1}), name), 1)

    def test_max_queue_one_message(self) -> None:
        """max_queue -1 and 0 get the same message, which states the real
        minimum (it once said ">= 0" for -1 and "at least 1" for 0)."""
        messages = {
            str(self.assertRaises(ConfigError, ServerConfig, max_queue=value))
            for value in (-1, 0)
        }
        self.assertEqual(
            messages,
            {
                "max_queue must be an integer >= 1, not -1",
                "max_queue must be an integer >= 1, not 0",
            },
        )

    def test_send_buffer_policy(self) -> None:
        """The policy is close, drop or wait; anything else names the choices."""
        for policy in ("close", "drop", "wait"):
            self.assertEqual(
                ServerConfig(send_buffer_policy=policy).send_buffer_policy, policy
            )
        exc = self.assertRaises(ConfigError, ServerConfig, send_buffer_policy="block")
        self.assertIn("close, drop, wait", str(exc))

    def test_route_cannot_override_server_only(self) -> None:
        """for_route refuses options that act before routing, naming them."""
        exc = self.assertRaises(
            ConfigError, ServerConfig().for_route, max_connections=5, max_headers=3
        )
        self.assertIn("max_connections", str(exc))
        self.assertIn("max_headers", str(exc))
        self.assertEqual(ServerConfig().for_route(max_queue=3).max_queue, 3)

    def test_heartbeat_on_by_default(self) -> None:
        """Keep-alive is on by default: a ping every 20 s, 20 s to answer."""
        config = ServerConfig()
        self.assertEqual(
            (config.heartbeat_interval, config.heartbeat_timeout), (20.0, 20.0)
        )


class StringListTests(SynchronousTestCase):
    """allowed_origins and subprotocols take lists of non-empty strings."""

    def test_bare_string_rejected(self) -> None:
        """A bare string is a ConfigError (it would be a list of characters)."""
        for name in ("allowed_origins", "subprotocols"):
            exc = self.assertRaises(ConfigError, ServerConfig, **{name: "chat"})
            self.assertIn(name, str(exc))

    def test_list_coerced_to_tuple(self) -> None:
        """A list (or any iterable) becomes a tuple, order kept."""
        config = ServerConfig(
            allowed_origins=["https://a", "https://b"],
            subprotocols=iter(["v2", "v1"]),
        )
        self.assertEqual(config.allowed_origins, ("https://a", "https://b"))
        self.assertEqual(config.subprotocols, ("v2", "v1"))

    def test_replace_coerces(self) -> None:
        """replace coerces lists too."""
        config = ServerConfig().replace(subprotocols=["x"])
        self.assertEqual(config.subprotocols, ("x",))

    def test_empty_allowed(self) -> None:
        """An empty list is an empty tuple."""
        self.assertEqual(ServerConfig(allowed_origins=[]).allowed_origins, ())

    def test_bad_items_rejected(self) -> None:
        """Empty strings and non-strings inside the list are rejected."""
        for value in ([""], ["ok", 3], [None], [b"bytes"]):
            self.assertRaises(ConfigError, ServerConfig, subprotocols=value)
            self.assertRaises(ConfigError, ServerConfig, allowed_origins=value)

    def test_non_iterable_rejected(self) -> None:
        """A non-iterable is a ConfigError naming the option."""
        exc = self.assertRaises(ConfigError, ServerConfig, allowed_origins=5)
        self.assertIn("allowed_origins", str(exc))
        self.assertRaises(ConfigError, ServerConfig, subprotocols=5)
        self.assertRaises(ConfigError, ServerConfig, subprotocols=None)

    def test_allowed_origins_default(self) -> None:
        """allowed_origins=None is the default policy (any origin on public
        routes, same origin on authenticated ones); a route may go back to it."""
        self.assertIsNone(ServerConfig(allowed_origins=None).allowed_origins)
        config = ServerConfig(allowed_origins=["*"]).for_route(allowed_origins=None)
        self.assertIsNone(config.allowed_origins)


class ServerHeaderTests(SynchronousTestCase):
    """server_header is one line of text."""

    def test_crlf_rejected(self) -> None:
        """CR or LF anywhere in server_header is a ConfigError."""
        for value in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "\n"):
            exc = self.assertRaises(ConfigError, ServerConfig, server_header=value)
            self.assertIn("server_header", str(exc))

    def test_non_string_rejected(self) -> None:
        """A non-string server_header is a ConfigError."""
        for value in (None, 1, b"wsplugin"):
            self.assertRaises(ConfigError, ServerConfig, server_header=value)

    def test_empty_and_custom_accepted(self) -> None:
        """ "" (omit the header) and ordinary values are kept."""
        self.assertEqual(ServerConfig(server_header="").server_header, "")
        self.assertEqual(ServerConfig(server_header="x/1.0").server_header, "x/1.0")


class PerIpExemptTests(SynchronousTestCase):
    """per_ip_exempt takes IP networks, normalised; anything else is refused."""

    def test_networks_normalised(self) -> None:
        """Addresses become networks; host bits are dropped; () is allowed."""
        config = ServerConfig(per_ip_exempt=["10.1.2.3", "2001:db8::1/64"])
        self.assertEqual(config.per_ip_exempt, ("10.1.2.3/32", "2001:db8::/64"))
        self.assertEqual(ServerConfig(per_ip_exempt=()).per_ip_exempt, ())

    def test_bad_networks(self) -> None:
        """A non-network, a bare string or a non-iterable gets ConfigError."""
        for bad in (["example.com"], "10.0.0.0/8", 5, [None]):
            self.assertRaises(ConfigError, ServerConfig, per_ip_exempt=bad)

    def test_server_only(self) -> None:
        """The HTTP and connection limits cannot be set per route."""
        for name, value in (
            ("max_connections_per_ip", 5),
            ("per_ip_exempt", ()),
            ("max_request_body", 5),
            ("request_body_timeout", 5),
        ):
            self.assertRaises(ConfigError, ServerConfig().for_route, **{name: value})
