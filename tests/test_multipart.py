"""The incremental multipart/form-data parser (wsplugin._multipart), with
values: whole bodies, bodies cut at every point, and malformed ones."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    parse_header_params,
)

settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

BOUNDARY = b"----formdata-7d2"


def body(*parts: tuple[bytes, bytes], boundary: bytes = BOUNDARY) -> bytes:
    """A multipart body from (header block, content) pairs."""
    out = b""
    for headers, content in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def field(name: str, value: bytes) -> tuple[bytes, bytes]:
    return (f'Content-Disposition: form-data; name="{name}"'.encode(), value)


def file(name: str, filename: str, content: bytes) -> tuple[bytes, bytes]:
    headers = (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream"
    ).encode()
    return (headers, content)


def parse(data: bytes, pieces: list[int] | None = None, **kwargs: Any) -> list[Any]:
    """Feed ``data`` cut at ``pieces`` (sizes; by default whole), close, and
    return the events with adjacent data merged and empty data dropped."""
    parser = MultipartParser(BOUNDARY, **kwargs)
    events: list[Any] = []
    at = 0
    for size in pieces or []:
        events += parser.feed(data[at : at + size])
        at += size
    events += parser.feed(data[at:])
    parser.close()
    merged: list[Any] = []
    for event in events:
        if isinstance(event, PartData):
            if not event.data:
                continue
            if merged and isinstance(merged[-1], PartData):
                merged[-1] = PartData(merged[-1].data + event.data)
                continue
        merged.append(event)
    return merged


def simple(events: list[Any]) -> list[Any]:
    """Events as plain tuples, for comparisons."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, PartStart):
            out.append(("start", e.name, e.filename))
        elif isinstance(e, PartData):
            out.append(("data", e.data))
        elif isinstance(e, PartEnd):
            out.append(("end",))
        else:
            out.append(("done",))
    return out


class WholeBodyTests(SynchronousTestCase):
    """Bodies fed in one piece."""

    def test_fields_and_files(self) -> None:
        """A field and a file come out as start, data, end; then done."""
        data = body(field("title", b"holiday"), file("photo", "a.jpg", b"\xff\xd8"))
        self.assertEqual(
            simple(parse(data)),
            [
                ("start", "title", None),
                ("data", b"holiday"),
                ("end",),
                ("start", "photo", "a.jpg"),
                ("data", b"\xff\xd8"),
                ("end",),
                ("done",),
            ],
        )

    def test_headers_kept(self) -> None:
        """The part's Content-Type and all its headers are reported."""
        (start, *_rest) = parse(body(file("f", "x.bin", b"1")))
        self.assertEqual(start.content_type, "application/octet-stream")
        self.assertEqual(
            [name for name, _ in start.headers], ["content-disposition", "content-type"]
        )

    def test_empty_content_and_crlf_inside(self) -> None:
        """Empty values and CRLFs (even a bare ``--``) inside content are data."""
        data = body(field("a", b""), field("b", b"\r\n--\r\n--x\r\n"))
        self.assertEqual(
            simple(parse(data)),
            [
                ("start", "a", None),
                ("end",),
                ("start", "b", None),
                ("data", b"\r\n--\r\n--x\r\n"),
                ("end",),
                ("done",),
            ],
        )

    def test_preamble_epilogue_padding(self) -> None:
        """A preamble and an epilogue are ignored; spaces after a boundary
        (RFC 2046 transport padding) are allowed."""
        data = (
            b"this is the preamble\r\n--" + BOUNDARY + b"  \t\r\n"
            b'Content-Disposition: form-data; name="a"\r\n\r\nv\r\n--'
            + BOUNDARY
            + b"--\r\nepilogue, ignored"
        )
        self.assertEqual(
            simple(parse(data)),
            [("start", "a", None), ("data", b"v"), ("end",), ("done",)],
        )

    def test_no_parts(self) -> None:
        """A body with only the closing delimiter is an empty form."""
        self.assertEqual(simple(parse(b"--" + BOUNDARY + b"--\r\n")), [("done",)])

    def test_after_done_ignored(self) -> None:
        """Bytes fed after the closing delimiter produce nothing."""
        parser = MultipartParser(BOUNDARY)
        parser.feed(body(field("a", b"1")))
        self.assertTrue(parser.done)
        self.assertEqual(parser.feed(b"--" + BOUNDARY + b"\r\nmore"), [])

    def test_names(self) -> None:
        """Quoted names with escapes, UTF-8 names, filename* (RFC 8187)."""
        data = body(
            (
                b'Content-Disposition: form-data; name="q\\"uote"; '
                b'filename="C:\\\\dir\\x.txt"',
                b"",
            ),
            (
                'Content-Disposition: form-data; name="é"; filename="ü.txt"'.encode(),
                b"",
            ),
            (
                b"Content-Disposition: form-data; name=n; "
                b"filename*=utf-8''%E2%82%AC.txt",
                b"",
            ),
        )
        starts = [e for e in parse(data) if isinstance(e, PartStart)]
        self.assertEqual(
            [(s.name, s.filename) for s in starts],
            [('q"uote', "C:\\dir\\x.txt"), ("é", "ü.txt"), ("n", "€.txt")],
        )


class IncrementalTests(SynchronousTestCase):
    """Bodies cut into pieces give the same events as whole ones."""

    DATA = body(
        field("title", b"a title"),
        file("f", "a.bin", bytes(range(256)) * 8 + b"\r\n--" + BOUNDARY[:-1]),
        field("empty", b""),
    )

    def test_every_cut(self) -> None:
        """Cut in two at every position: same events."""
        expected = parse(self.DATA)
        for at in range(len(self.DATA) + 1):
            self.assertEqual(parse(self.DATA, [at]), expected, at)

    def test_byte_by_byte(self) -> None:
        """Fed one byte at a time: same events, and no data event holds more
        than the bytes fed so far can prove are content."""
        self.assertEqual(parse(self.DATA, [1] * len(self.DATA)), parse(self.DATA))

    @given(st.lists(st.integers(min_value=0, max_value=200), max_size=40))
    def test_random_cuts(self, sizes: list[int]) -> None:
        """Any cutting gives the same events."""
        self.assertEqual(parse(self.DATA, sizes), parse(self.DATA))

    @given(
        st.lists(
            st.tuples(
                st.text(
                    alphabet=st.characters(
                        codec="utf-8",
                        exclude_categories=("Cc", "Cs"),
                        exclude_characters='"\\',
                    ),
                    min_size=1,
                    max_size=10,
                ),
                st.binary(max_size=300),
            ),
            max_size=5,
        ),
        st.lists(st.integers(min_value=1, max_value=97), max_size=30),
    )
    def test_round_trip(
        self, fields: list[tuple[str, bytes]], sizes: list[int]
    ) -> None:
        """Any fields (names, binary values) come back as sent, however cut,
        unless a value happens to contain the delimiter."""
        parts = [field(name, value) for name, value in fields]
        data = body(*parts)
        if any(b"\r\n--" + BOUNDARY in b"\r\n" + v + b"\r\n" for _, v in fields):
            return  # not a valid body: content must not hold the delimiter
        expected: list[Any] = []
        for name, value in fields:
            expected.append(("start", name, None))
            if value:
                expected.append(("data", value))
            expected.append(("end",))
        expected.append(("done",))
        self.assertEqual(simple(parse(data, sizes)), expected)

    def test_bounded_hold_back(self) -> None:
        """Within a part's content at most len(delimiter) - 1 bytes are held
        back: memory does not grow with the content."""
        parser = MultipartParser(BOUNDARY)
        parser.feed(
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
        )
        out = 0
        for _ in range(1000):
            out += sum(
                len(e.data)
                for e in parser.feed(b"x" * 65536)
                if isinstance(e, PartData)
            )
        self.assertEqual(1000 * 65536 - out, len(b"\r\n--" + BOUNDARY) - 1)


class MalformedTests(SynchronousTestCase):
    """Malformed bodies are refused with a MultipartError (400)."""

    def refused(self, data: bytes, message: str, **kwargs: Any) -> None:
        with self.assertRaises(MultipartError) as caught:
            parse(data, **kwargs)
        self.assertIn(message, str(caught.exception))
        self.assertEqual(caught.exception.status, 400)

    def test_cut_short(self) -> None:
        """A body without its closing delimiter."""
        data = body(field("a", b"1"))
        self.refused(data[:-10], "ended before the closing boundary")
        self.refused(b"", "ended before the closing boundary")
        self.refused(b"no boundary at all", "ended before the closing boundary")

    def test_header_block_bounded(self) -> None:
        """A part header block over max_header_size, ended or not."""
        big = b"X-Pad: " + b"a" * 2000
        data = body((b'Content-Disposition: form-data; name="a"\r\n' + big, b""))
        self.refused(data, "part headers over 1024 bytes", max_header_size=1024)
        unended = b"--" + BOUNDARY + b"\r\n" + big
        parser = MultipartParser(BOUNDARY, max_header_size=1024)
        with self.assertRaises(MultipartError):
            parser.feed(unended)

    def test_bad_boundary_line(self) -> None:
        """A delimiter followed by something other than padding and CRLF."""
        self.refused(
            b"--" + BOUNDARY + b"junk\r\n\r\n--" + BOUNDARY + b"--",
            "malformed boundary",
        )

    def test_disposition_problems(self) -> None:
        """No Content-Disposition, two of them, not form-data, no name,
        duplicated parameters, folding, bad header lines."""
        cases = [
            (b"Content-Type: text/plain", "exactly one Content-Disposition"),
            (
                b'Content-Disposition: form-data; name="a"\r\n'
                b'Content-Disposition: form-data; name="b"',
                "exactly one Content-Disposition",
            ),
            (b'Content-Disposition: attachment; name="a"', "must be form-data"),
            (b'Content-Disposition: form-data; filename="a"', "without a name"),
            (
                b'Content-Disposition: form-data; name="a"; filename="x.txt"; '
                b'filename="x.php"',
                "appears twice",
            ),
            (b'Content-Disposition: form-data;\r\n name="a"', "folding"),
            (
                b'Content-Disposition: form-data; name="a"\r\nno colon',
                "malformed part header",
            ),
            (b'Content-Disposition: form-data; name="a\x00"', "control character"),
            (b'Content-Disposition: form-data; name="a', "unterminated"),
            (
                b'Content-Disposition: form-data; name="a"\r\n'
                b"Content-Type: a/b\r\nContent-Type: c/d",
                "two Content-Type",
            ),
        ]
        for headers, message in cases:
            self.refused(body((headers, b"")), message)


class HeaderValueTests(SynchronousTestCase):
    """Content-Type and Content-Disposition values."""

    def test_boundary_of(self) -> None:
        """The boundary of a multipart/form-data type, quoted or not."""
        self.assertEqual(
            boundary_of("multipart/form-data; boundary=----WebKitFormBoundaryX"),
            b"----WebKitFormBoundaryX",
        )
        self.assertEqual(
            boundary_of('Multipart/Form-Data; charset=utf-8; boundary="a b:c"'),
            b"a b:c",
        )

    def test_wrong_type_is_415(self) -> None:
        """Another media type (or none) is 415; a missing or invalid
        boundary is 400."""
        for value in ("application/json", "", "multipart/mixed; boundary=x"):
            with self.assertRaises(MultipartError) as caught:
                boundary_of(value)
            self.assertEqual(caught.exception.status, 415, value)
        for value in (
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=" + "x" * 71,
            'multipart/form-data; boundary="ends in space "',
            'multipart/form-data; boundary="no\\"quote"',
        ):
            with self.assertRaises(MultipartError) as caught:
                boundary_of(value)
            self.assertEqual(caught.exception.status, 400, value)

    def test_params(self) -> None:
        """Tokens, quoted strings and a trailing semicolon."""
        self.assertEqual(
            parse_header_params('form-data; name=a; filename="b c";'),
            ("form-data", {"name": "a", "filename": "b c"}),
        )
        with self.assertRaises(MultipartError):
            parse_header_params("form-data; name")
        with self.assertRaises(MultipartError):
            parse_header_params("form-data name=a")
        with self.assertRaises(MultipartError):
            parse_header_params("form-data; name*=latin-1''x")
