"""``wsplugin._headers``: which response headers an application may set."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import wsplugin.handshake
from wsplugin import Reject
from wsplugin._headers import PROTECTED_RESPONSE_HEADERS, check_header
from wsplugin.errors import ConfigError


class CheckHeaderTests(SynchronousTestCase):
    def test_safe_headers_pass(self) -> None:
        """A token name with a printable value (tabs allowed) passes."""
        check_header("WWW-Authenticate", 'Basic realm="x"')
        check_header("X-Trace", "a\tb")
        check_header("Set-Cookie", "a=b; Path=/")

    def test_bad_names_and_values(self) -> None:
        """A name that is not an HTTP token, or a value with CR, LF or
        another control character (header injection), is refused."""
        for name in ("", "X Trace", "X:Y", "Ünicode", b"X-Bytes", None):
            with self.assertRaises(ValueError, msg=repr(name)):
                check_header(name, "v")  # type: ignore[arg-type]
        for value in ("a\r\nSet-Cookie: x=1", "a\nb", "\x00", "\x7f", b"v"):
            with self.assertRaises(ValueError, msg=repr(value)):
                check_header("X", value)  # type: ignore[arg-type]

    def test_protected_headers(self) -> None:
        """The handshake's own headers are refused in any case, unless
        ``protected=False``."""
        for name in PROTECTED_RESPONSE_HEADERS:
            with self.assertRaises(ValueError):
                check_header(name.title(), "x")
            check_header(name, "x", protected=False)
        self.assertIn("sec-websocket-accept", PROTECTED_RESPONSE_HEADERS)

    def test_used_by_reject_and_handshake(self) -> None:
        """A Reject with an unsafe header is a ConfigError saying why, and
        ``wsplugin.handshake`` still exports the same checker."""
        with self.assertRaises(ConfigError) as caught:
            Reject(401, "Unauthorized", [("Upgrade", "websocket")])
        self.assertIn("set by the server itself", str(caught.exception))
        with self.assertRaises(ConfigError):
            Reject(401, "Unauthorized", [("X", "a\r\nb")])
        self.assertIs(wsplugin.handshake.check_header, check_header)
        self.assertIs(
            wsplugin.handshake.PROTECTED_RESPONSE_HEADERS, PROTECTED_RESPONSE_HEADERS
        )
