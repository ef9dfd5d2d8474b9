"""Tests for ``wsplugin.client._http``: the response head and error body
parsers, pure."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.client import parse_response_head
from wsplugin.client._http import ResponseHead, body_progress, decode_chunked


class ResponseHeadTests(SynchronousTestCase):
    """The response head and chunked body parsers."""

    def test_parse(self) -> None:
        """Status, reason and every header (repeated ones too) are read."""
        data = (
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody"
        )
        head = parse_response_head(data)
        assert head is not None
        self.assertEqual((head.status, head.reason), (401, "Unauthorized"))
        self.assertEqual(
            [v for k, v in head.headers if k == "Set-Cookie"], ["a=1", "b=2"]
        )
        self.assertEqual(data[head.length :], b"body")

    def test_incomplete_and_invalid(self) -> None:
        """No blank line yet gives None; a non-HTTP head is a ValueError."""
        self.assertIsNone(parse_response_head(b"HTTP/1.1 101 OK\r\nUpgrade: x\r\n"))
        self.assertRaises(ValueError, parse_response_head, b"SSH-2.0-x\r\n\r\n")
        self.assertRaises(ValueError, parse_response_head, b"HTTP/1.1 2 x\r\n\r\n")
        self.assertRaises(
            ValueError, parse_response_head, b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"
        )

    def test_chunked(self) -> None:
        """Chunked bodies decode, wait for more, and stop at the limit."""
        data = b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        self.assertEqual(decode_chunked(data, 100), (b"abcde", True))
        self.assertEqual(decode_chunked(data[:12], 100), (b"abc", False))
        self.assertEqual(decode_chunked(data, 4), (b"abcd", True))
        self.assertEqual(decode_chunked(b"zz\r\n", 100), (b"", True))

    @settings(max_examples=50, derandomize=True)
    @given(st.lists(st.binary(min_size=1, max_size=40), max_size=8))
    def test_chunked_round_trip(self, chunks: list[bytes]) -> None:
        """Any chunking of a body decodes back to the body."""
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        encoded += b"0\r\n\r\n"
        self.assertEqual(decode_chunked(encoded, 10_000), (b"".join(chunks), True))


def head(status: int, *headers: tuple[str, str]) -> ResponseHead:
    """A parsed head with ``status`` and ``headers``."""
    return ResponseHead("HTTP/1.1", status, "", tuple(headers), 0)


class BodyProgressTests(SynchronousTestCase):
    """``body_progress`` delimits an error body as HTTP/1.1 does, bounded."""

    def test_no_body(self) -> None:
        """1xx, 204 and 304 answers have no body, whatever follows."""
        for status in (100, 204, 304):
            self.assertEqual(body_progress(head(status), b"junk", 100), (b"", True))

    def test_content_length(self) -> None:
        """Content-Length (any case) says when the body is complete; the
        limit caps what is kept and what is waited for."""
        h = head(403, ("content-LENGTH", "5"))
        self.assertEqual(body_progress(h, b"hel", 100), (b"hel", False))
        self.assertEqual(body_progress(h, b"hello", 100), (b"hello", True))
        self.assertEqual(body_progress(h, b"hel", 3), (b"hel", True))

    def test_chunked_wins(self) -> None:
        """Transfer-Encoding: chunked is decoded, Content-Length ignored."""
        h = head(403, ("Transfer-Encoding", "Chunked"), ("Content-Length", "1"))
        self.assertEqual(body_progress(h, b"2\r\nab\r\n0\r\n\r\n", 100), (b"ab", True))

    def test_until_close(self) -> None:
        """Without a length, the body runs until the limit (or the close)."""
        h = head(500, ("Content-Length", "x"))
        self.assertEqual(body_progress(h, b"abc", 100), (b"abc", False))
        self.assertEqual(body_progress(h, b"abcdef", 4), (b"abcd", True))
