"""wsplugin._pycodec: the pure-Python frame codec, reference and fallback.

Its behaviour is stated once for both codecs (``CodecTests`` in
tests/test_codec.py, which also fuzzes the two against each other); here it
runs against this one, and the close payload rules are checked on it
directly (the compiled codec is the active one when it is built).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_codec import CodecTests, frame
from wsplugin import _pycodec
from wsplugin.protocol import close_frame_problem


class PythonCodecTests(CodecTests, SynchronousTestCase):
    """The pure-Python codec."""

    impl = _pycodec


class PythonClosePayloadTests(SynchronousTestCase):
    """_pycodec.close_payload_problem agrees with the server's rules."""

    def test_every_code(self) -> None:
        """Every 16-bit close code is judged as the server judges it."""
        for code in range(65536):
            payload = code.to_bytes(2, "big") + b"why"
            self.assertEqual(
                _pycodec.close_payload_problem(payload),
                close_frame_problem(code, b"why"),
                code,
            )

    def test_payloads(self) -> None:
        """No payload is fine; a reason that is not UTF-8 (or ends inside a
        code point) is 1007. A 1-byte payload is the reader's to fail
        (1002): it never reaches close_payload_problem."""
        self.assertIsNone(_pycodec.close_payload_problem(b""))
        self.assertIsNone(_pycodec.close_payload_problem(b"\x03\xe8" + "é".encode()))
        for reason in (b"\xff", b"\xc3", b"ok\xed\xa0\x80"):
            problem = _pycodec.close_payload_problem(b"\x03\xe8" + reason)
            self.assertEqual(problem, (1007, "close reason is not UTF-8"), reason)
        self.assertIsNone(_pycodec.close_payload_problem(b"\x03"))
        events = _pycodec.FrameReader(0, 0).feed(frame(_pycodec.CLOSE, b"\x03"))
        self.assertEqual(events[-1][:2], (_pycodec.ERROR, 1002))

    def test_constants(self) -> None:
        """Event kinds are the opcodes; the close codes are RFC 6455's."""
        self.assertEqual(
            (
                _pycodec.TEXT,
                _pycodec.BINARY,
                _pycodec.CLOSE,
                _pycodec.PING,
                _pycodec.PONG,
            ),
            (1, 2, 8, 9, 10),
        )
        self.assertEqual(
            (
                _pycodec.CLOSE_PROTOCOL_ERROR,
                _pycodec.CLOSE_INVALID_PAYLOAD,
                _pycodec.CLOSE_MESSAGE_TOO_BIG,
            ),
            (1002, 1007, 1009),
        )
        self.assertNotIn(_pycodec.FRAGMENT, (1, 2, 8, 9, 10))
        self.assertNotIn(_pycodec.ERROR, (1, 2, 8, 9, 10, _pycodec.FRAGMENT))
