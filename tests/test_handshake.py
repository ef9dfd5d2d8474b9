"""Parsing and normalising the opening handshake head (wsplugin.handshake)."""

from __future__ import annotations

import os

from autobahn.websocket.protocol import parseHttpHeader
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.errors import HandshakeRejected
from wsplugin.handshake import (
    RequestHead,
    accepts_other_sites,
    body_problem,
    normalize_head,
    origin_allowed,
    parse_request_head,
    same_origin,
    split_host,
    target_problem,
    version_problem,
)

settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def head_bytes(*lines: str) -> bytes:
    """A request head from its lines, ended by the blank line."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse(*lines: str) -> RequestHead:
    """Parse a complete head that must not be None."""
    head = parse_request_head(head_bytes(*lines))
    assert head is not None
    return head


UPGRADE_HEAD = (
    "GET /chat?room=1 HTTP/1.1",
    "Host: example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
)


class ParseRequestHeadTests(SynchronousTestCase):
    """parse_request_head reads a complete head or waits for more bytes."""

    def test_complete_head(self) -> None:
        """Method, target, version, headers and length come from the head."""
        data = head_bytes(*UPGRADE_HEAD)
        head = parse_request_head(data)
        self.assertEqual(
            head,
            RequestHead(
                "GET",
                "/chat?room=1",
                "HTTP/1.1",
                (
                    ("Host", "example.com"),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ),
                len(data),
            ),
        )

    def test_trailing_bytes_not_counted(self) -> None:
        """Bytes after the blank line (e.g. a first frame) are not in length."""
        data = head_bytes("GET / HTTP/1.1", "Host: a")
        head = parse_request_head(data + b"\x81\x80garbage")
        assert head is not None
        self.assertEqual(head.length, len(data))
        self.assertEqual(head.headers, (("Host", "a"),))

    def test_no_headers(self) -> None:
        """A request line alone is a head without headers."""
        head = parse("GET / HTTP/1.1")
        self.assertEqual(head.headers, ())
        self.assertEqual(head.length, len(b"GET / HTTP/1.1\r\n\r\n"))

    def test_incomplete_returns_none(self) -> None:
        """Every strict prefix of a head gives None (more bytes needed)."""
        data = head_bytes(*UPGRADE_HEAD)
        results = {parse_request_head(data[:n], 16384, 100) for n in range(len(data))}
        self.assertEqual(results, {None})

    def test_header_order_and_case_kept(self) -> None:
        """Headers keep their order, names as sent, duplicates included."""
        head = parse(
            "GET / HTTP/1.1",
            "X-b: 2",
            "HOST: h",
            "x-B: 3",
            "sec-websocket-KEY: k",
        )
        self.assertEqual(
            head.headers,
            (("X-b", "2"), ("HOST", "h"), ("x-B", "3"), ("sec-websocket-KEY", "k")),
        )

    def test_value_whitespace_stripped(self) -> None:
        """Spaces around a value are removed; a colon inside a value is kept."""
        head = parse("GET / HTTP/1.1", "Origin:   http://a:80  ", "Empty:")
        self.assertEqual(head.headers, (("Origin", "http://a:80"), ("Empty", "")))

    def test_get_case_insensitive(self) -> None:
        """get matches names case-insensitively and returns the first value."""
        head = parse("GET / HTTP/1.1", "X-Thing: one", "x-thing: two")
        self.assertEqual(head.get("X-THING"), "one")
        self.assertEqual(head.get("x-thing"), "one")
        self.assertIsNone(head.get("missing"))
        self.assertEqual(head.get("missing", "dflt"), "dflt")

    def test_path_and_params(self) -> None:
        """path drops the query; params lists every value, blanks kept."""
        head = parse("GET /a/b?x=1&y=&x=2 HTTP/1.1", "Host: h")
        self.assertEqual(head.path, "/a/b")
        self.assertEqual(head.params, {"x": ["1", "2"], "y": [""]})

    def test_empty_path(self) -> None:
        """A target with only a query has path "/"."""
        head = parse("GET ?q=1 HTTP/1.1")
        self.assertEqual(head.path, "/")
        self.assertEqual(head.params, {"q": ["1"]})

    def test_no_query(self) -> None:
        """A target without a query has no params."""
        self.assertEqual(parse("GET /x HTTP/1.1").params, {})

    def test_host_port_removed_and_lowercased(self) -> None:
        """host lowercases the Host header and drops its port."""
        self.assertEqual(
            parse("GET / HTTP/1.1", "Host: EXAMPLE.Com:8080").host, "example.com"
        )

    def test_host_ipv6(self) -> None:
        """An IPv6 literal keeps its brackets and loses its port."""
        self.assertEqual(parse("GET / HTTP/1.1", "Host: [::1]:8080").host, "[::1]")
        self.assertEqual(parse("GET / HTTP/1.1", "Host: [FE80::1]").host, "[fe80::1]")

    def test_host_absent(self) -> None:
        """Without a Host header host is ""."""
        self.assertEqual(parse("GET / HTTP/1.1", "X: y").host, "")


class ParseRequestHeadLimitTests(SynchronousTestCase):
    """max_head and max_headers bound the head: 431 over them."""

    def assertRejected(self, status: int, data: bytes, *args: int) -> None:
        """parse_request_head(data, *args) raises HandshakeRejected(status)."""
        exc = self.assertRaises(HandshakeRejected, parse_request_head, data, *args)
        self.assertEqual(exc.status, status)

    def test_incomplete_over_limit(self) -> None:
        """An unfinished head longer than max_head (+ room for the blank line)
        is rejected with 431 instead of buffered."""
        self.assertRejected(431, b"GET / HTTP/1.1\r\nX: " + b"a" * 100, 50)

    def test_incomplete_under_limit(self) -> None:
        """An unfinished head still within max_head gives None."""
        self.assertIsNone(parse_request_head(b"GET / HTTP/1.1\r\nX: aaaa", 50))

    def test_limit_boundary(self) -> None:
        """Request line plus headers of exactly max_head bytes is accepted,
        one byte more is 431 (the blank line that ends the head is not counted)."""
        text = "GET / HTTP/1.1\r\nX: " + "a" * 20
        limit = len(text)
        head = parse_request_head((text + "\r\n\r\n").encode(), limit)
        assert head is not None
        self.assertEqual(head.get("x"), "a" * 20)
        self.assertRejected(431, (text + "a\r\n\r\n").encode(), limit)

    def test_incomplete_boundary(self) -> None:
        """Without the blank line, None while the head can still end within the
        limit; 431 as soon as it cannot."""
        text = b"GET / HTTP/1.1\r\nX: " + b"a" * 20
        limit = len(text)
        self.assertIsNone(parse_request_head(text + b"\r\n\r", limit))
        self.assertRejected(431, text + b"a\r\n\r", limit)

    def test_complete_but_too_long(self) -> None:
        """A complete head longer than max_head is 431, not parsed."""
        data = head_bytes("GET / HTTP/1.1", "X: " + "a" * 200)
        self.assertRejected(431, data, 100)

    def test_unbounded_by_default(self) -> None:
        """max_head 0 means no limit: a 1 MiB header is parsed."""
        head = parse_request_head(head_bytes("GET / HTTP/1.1", "X: " + "a" * 2**20))
        assert head is not None
        self.assertEqual(len(head.get("x") or ""), 2**20)

    def test_too_many_headers(self) -> None:
        """More header lines than max_headers is 431; exactly max_headers is fine."""
        lines = ["GET / HTTP/1.1"] + [f"H{i}: v" for i in range(5)]
        head = parse_request_head(head_bytes(*lines), 0, 5)
        assert head is not None
        self.assertEqual(len(head.headers), 5)
        self.assertRejected(431, head_bytes(*lines, "H5: v"), 0, 5)

    def test_headers_unbounded_by_default(self) -> None:
        """max_headers 0 means no limit."""
        lines = ["GET / HTTP/1.1"] + [f"H{i}: v" for i in range(1000)]
        head = parse_request_head(head_bytes(*lines))
        assert head is not None
        self.assertEqual(len(head.headers), 1000)


class ParseRequestHeadMalformedTests(SynchronousTestCase):
    """A malformed head is rejected with 400."""

    def assertBadRequest(self, *lines: str) -> None:
        """The head made of these lines raises HandshakeRejected(400)."""
        exc = self.assertRaises(
            HandshakeRejected, parse_request_head, head_bytes(*lines)
        )
        self.assertEqual(exc.status, 400)

    def test_request_line_too_few_parts(self) -> None:
        """A request line without a version is 400."""
        self.assertBadRequest("GET /")

    def test_request_line_too_many_parts(self) -> None:
        """A request line with an extra token is 400."""
        self.assertBadRequest("GET / HTTP/1.1 extra")

    def test_request_line_double_space(self) -> None:
        """An empty token (two spaces) is 400."""
        self.assertBadRequest("GET  / HTTP/1.1")

    def test_empty_head(self) -> None:
        """A blank line alone is 400."""
        exc = self.assertRaises(HandshakeRejected, parse_request_head, b"\r\n\r\n")
        self.assertEqual(exc.status, 400)

    def test_header_without_colon(self) -> None:
        """A header line without a colon is 400."""
        self.assertBadRequest("GET / HTTP/1.1", "Host example.com")

    def test_header_with_space_in_name(self) -> None:
        """A space inside a header name is 400."""
        self.assertBadRequest("GET / HTTP/1.1", "Bad Name: v")

    def test_header_with_space_before_colon(self) -> None:
        """Whitespace between the name and the colon is 400 (RFC 9112 5.1)."""
        self.assertBadRequest("GET / HTTP/1.1", "Host : example.com")

    def test_folded_header(self) -> None:
        """An obsolete folded continuation line is 400."""
        self.assertBadRequest("GET / HTTP/1.1", "X: a", " b")

    def test_empty_header_name(self) -> None:
        """A line starting with a colon is 400."""
        self.assertBadRequest("GET / HTTP/1.1", ": v")

    def test_bare_lf_in_header_line(self) -> None:
        """A bare LF inside a header line is 400 (RFC 9110 section 5.5: a field
        value with CR, LF or NUL must be rejected or have it replaced; Autobahn
        splits the line there and would see a header wsplugin never checked)."""
        self.assertBadRequest(
            "GET / HTTP/1.1", "Host: h", "X: a\nOrigin: https://evil.example"
        )

    def test_bare_cr_in_header_line(self) -> None:
        """A bare CR inside a header line is 400 (RFC 9110 section 5.5)."""
        self.assertBadRequest(
            "GET / HTTP/1.1", "Host: h", "X: a\rOrigin: https://evil.example"
        )

    def test_same_headers_as_autobahn(self) -> None:
        """For every character Autobahn's parser treats as a line break, the head
        is either rejected with 400 or parsed into the same header names
        Autobahn later sees, so the Origin/Host/limit checks apply to the
        headers Autobahn validates."""
        disagreements = []
        for sep in ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"):
            data = head_bytes(
                "GET / HTTP/1.1", "Host: h", f"X: a{sep}Origin: https://evil.example"
            )
            try:
                head = parse_request_head(data)
            except HandshakeRejected as e:
                self.assertEqual(e.status, 400)
                continue
            assert head is not None
            ours = sorted({k.lower() for k, _ in head.headers})
            _, theirs, _ = parseHttpHeader(data[: head.length])
            if ours != sorted(theirs):
                disagreements.append((sep, ours, sorted(theirs)))
        self.assertEqual(disagreements, [])


class ParseRequestHeadPropertyTests(SynchronousTestCase):
    """parse_request_head on arbitrary bytes."""

    @given(
        data=st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.sampled_from(
                    [b"GET", b" ", b"/", b"HTTP/1.1", b"\r\n", b"\r\n\r\n", b":", b"a"]
                ),
                max_size=40,
            ).map(b"".join),
        ),
        max_head=st.integers(min_value=0, max_value=200),
        max_headers=st.integers(min_value=0, max_value=5),
    )
    def test_only_rejects_and_bounded(
        self, data: bytes, max_head: int, max_headers: int
    ) -> None:
        """Only HandshakeRejected (400/431) is raised; a parsed head's length
        is at most the input, ends with the blank line, and respects max_head
        and max_headers."""
        try:
            head = parse_request_head(data, max_head, max_headers)
        except HandshakeRejected as e:
            self.assertIn(e.status, (400, 431))
            return
        if head is None:
            self.assertNotIn(b"\r\n\r\n", data[: max_head + 4] if max_head else data)
            return
        self.assertLessEqual(head.length, len(data))
        self.assertEqual(data[head.length - 4 : head.length], b"\r\n\r\n")
        if max_head:
            self.assertLessEqual(head.length, max_head + 4)
        if max_headers:
            self.assertLessEqual(len(head.headers), max_headers)


class NormalizeHeadTests(SynchronousTestCase):
    """normalize_head rewrites what the skip options allow, nothing else."""

    def test_nothing_to_change(self) -> None:
        """A valid upgrade head needs no change, whatever the options."""
        head = parse(*UPGRADE_HEAD)
        for upgrade in (False, True):
            for version in (False, True):
                self.assertIsNone(normalize_head(head, upgrade, version))

    def test_options_off(self) -> None:
        """Without skip options a broken head is left alone (None)."""
        head = parse("GET / HTTP/1.1", "Host: h")
        self.assertIsNone(normalize_head(head, False, False))

    def test_upgrade_tokens_in_lists(self) -> None:
        """Upgrade/Connection token lists, in any case, need no change."""
        head = parse(
            "GET / HTTP/1.1",
            "Upgrade: h2c, WebSocket",
            "Connection: keep-alive, UPGRADE",
        )
        self.assertIsNone(normalize_head(head, True, False))

    def test_missing_upgrade_added(self) -> None:
        """skip_upgrade_check adds Upgrade and Connection after the other headers."""
        head = parse("GET /p?q HTTP/1.1", "Host: h", "Sec-WebSocket-Key: k")
        self.assertEqual(
            normalize_head(head, True, False),
            head_bytes(
                "GET /p?q HTTP/1.1",
                "Host: h",
                "Sec-WebSocket-Key: k",
                "Upgrade: websocket",
                "Connection: Upgrade",
            ),
        )

    def test_wrong_upgrade_replaced(self) -> None:
        """A wrong Upgrade/Connection pair is dropped and replaced, others kept."""
        head = parse(
            "GET / HTTP/1.1",
            "Host: h",
            "upgrade: h2c",
            "X-Mid: m",
            "CONNECTION: close",
            "Sec-WebSocket-Version: 13",
        )
        self.assertEqual(
            normalize_head(head, True, False),
            head_bytes(
                "GET / HTTP/1.1",
                "Host: h",
                "X-Mid: m",
                "Sec-WebSocket-Version: 13",
                "Upgrade: websocket",
                "Connection: Upgrade",
            ),
        )

    def test_wrong_connection_only(self) -> None:
        """A right Upgrade with a wrong Connection still gets both replaced."""
        head = parse("GET / HTTP/1.1", "Upgrade: websocket", "Connection: keep-alive")
        self.assertEqual(
            normalize_head(head, True, False),
            head_bytes("GET / HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"),
        )

    def test_missing_version_added(self) -> None:
        """skip_version_check adds version 13 when none is sent."""
        head = parse("GET / HTTP/1.1", "Host: h", "Upgrade: websocket")
        self.assertEqual(
            normalize_head(head, False, True),
            head_bytes(
                "GET / HTTP/1.1",
                "Host: h",
                "Upgrade: websocket",
                "Sec-WebSocket-Version: 13",
            ),
        )

    def test_unsupported_versions_replaced(self) -> None:
        """Versions "8" and "99" become 13; the other headers keep their order."""
        for version in ("8", "99"):
            head = parse(
                "GET / HTTP/1.1",
                "A: 1",
                f"sec-websocket-version: {version}",
                "B: 2",
            )
            self.assertEqual(
                normalize_head(head, False, True),
                head_bytes(
                    "GET / HTTP/1.1", "A: 1", "B: 2", "Sec-WebSocket-Version: 13"
                ),
                version,
            )

    def test_duplicate_versions_replaced(self) -> None:
        """Two version headers (even one being 13) collapse into one 13."""
        head = parse(
            "GET / HTTP/1.1", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"
        )
        self.assertEqual(
            normalize_head(head, False, True),
            head_bytes("GET / HTTP/1.1", "Sec-WebSocket-Version: 13"),
        )

    def test_both_options(self) -> None:
        """Both options together fix both parts; the result parses back."""
        head = parse("GET /x HTTP/1.1", "Host: h", "Origin: http://o")
        data = normalize_head(head, True, True)
        self.assertEqual(
            data,
            head_bytes(
                "GET /x HTTP/1.1",
                "Host: h",
                "Origin: http://o",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
            ),
        )
        assert data is not None
        again = parse_request_head(data)
        assert again is not None
        self.assertIsNone(normalize_head(again, True, True))


class OriginAllowedTests(SynchronousTestCase):
    """origin_allowed matches whole origins against ``*`` patterns."""

    def test_exact(self) -> None:
        """An exact pattern matches that origin only."""
        patterns = ("https://example.com",)
        self.assertTrue(origin_allowed("https://example.com", patterns))
        self.assertFalse(origin_allowed("http://example.com", patterns))
        self.assertFalse(origin_allowed("https://example.com:8443", patterns))
        self.assertFalse(origin_allowed("https://example.co", patterns))

    def test_case_insensitive(self) -> None:
        """Origin and pattern case do not matter; surrounding spaces are ignored."""
        self.assertTrue(
            origin_allowed(" HTTPS://Example.COM ", ("https://EXAMPLE.com",))
        )

    def test_star_matches_anything(self) -> None:
        """ "*" matches any origin, "null" and the empty string included."""
        for origin in ("https://a.b", "null", "", "file://"):
            self.assertTrue(origin_allowed(origin, ("*",)), origin)

    def test_no_patterns(self) -> None:
        """No pattern allows no origin."""
        self.assertFalse(origin_allowed("https://example.com", ()))

    def test_any_pattern(self) -> None:
        """One matching pattern among several is enough."""
        patterns = ("https://a.com", "https://b.com")
        self.assertTrue(origin_allowed("https://b.com", patterns))
        self.assertFalse(origin_allowed("https://c.com", patterns))

    def test_subdomain_wildcard(self) -> None:
        """ "https://*.example.com" matches subdomains, not the bare domain nor
        a look-alike host or another scheme."""
        patterns = ("https://*.example.com",)
        self.assertTrue(origin_allowed("https://a.example.com", patterns))
        self.assertTrue(origin_allowed("https://a.b.example.com", patterns))
        self.assertFalse(origin_allowed("https://example.com", patterns))
        self.assertFalse(origin_allowed("https://example.com.evil.org", patterns))
        self.assertFalse(origin_allowed("https://evilexample.com", patterns))
        self.assertFalse(origin_allowed("http://a.example.com", patterns))

    def test_port_wildcard(self) -> None:
        """ "http://localhost:*" matches any port, not another host."""
        patterns = ("http://localhost:*",)
        self.assertTrue(origin_allowed("http://localhost:8080", patterns))
        self.assertFalse(origin_allowed("http://localhost", patterns))
        self.assertFalse(origin_allowed("http://localhost.evil.org:80", patterns))

    def test_ipv6_literal(self) -> None:
        """Brackets are literal: "http://[::1]:*" matches "http://[::1]:8080"."""
        patterns = ("http://[::1]:*",)
        self.assertTrue(origin_allowed("http://[::1]:8080", patterns))
        self.assertFalse(origin_allowed("http://:8080", patterns))
        self.assertFalse(origin_allowed("http://1:8080", patterns))
        self.assertTrue(origin_allowed("http://[::1]", ("http://[::1]",)))

    def test_question_mark_literal(self) -> None:
        """ "?" matches only itself, not any character."""
        self.assertFalse(origin_allowed("https://a.com", ("https://?.com",)))
        self.assertTrue(origin_allowed("https://?.com", ("https://?.com",)))

    def test_null_needs_star_or_null(self) -> None:
        """ "null" only matches "*" or the pattern "null"."""
        self.assertFalse(origin_allowed("null", ("https://*",)))
        self.assertTrue(origin_allowed("null", ("null",)))

    @given(
        st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
            max_size=40,
        )
    )
    def test_origin_matches_itself(self, origin: str) -> None:
        """Any printable ASCII origin used as its own pattern matches itself,
        in any case ("same-origin" is the keyword pattern, not an origin)."""
        assume(origin.lower() != "same-origin")
        self.assertTrue(origin_allowed(origin, (origin,)))
        self.assertTrue(origin_allowed(origin.upper(), (origin.lower(),)))


class SameOriginTests(SynchronousTestCase):
    """The default policy of authenticated routes: Origin host and port equal
    the Host header's."""

    def test_same_origin(self) -> None:
        """Host and port must match; a Host without a port means the origin
        scheme's default port; the scheme is not compared."""
        cases = [
            ("http://app.example:8080", "app.example:8080", True),
            ("https://app.example:8080", "APP.example:8080", True),
            ("http://app.example", "app.example", True),
            ("http://app.example:80", "app.example", True),
            ("https://app.example", "app.example", True),
            ("https://app.example:443", "app.example", True),
            ("https://app.example", "app.example:443", True),
            ("http://[::1]:8080", "[::1]:8080", True),
            ("http://app.example:8081", "app.example:8080", False),
            ("http://app.example:8080", "app.example", False),
            ("https://evil.example", "app.example", False),
            ("http://app.example.evil.org", "app.example", False),
            ("null", "app.example", False),
            ("http://app.example/path", "app.example", False),
            ("http://u@app.example", "app.example", False),
            ("ftp://app.example", "app.example", False),
            ("http://app.example:99999", "app.example:99999", False),
            ("http://app.example", "", False),
            ("http://app.example", "app.example:x", False),
        ]
        for origin, host, expected in cases:
            self.assertEqual(same_origin(origin, host), expected, (origin, host))

    def test_default_policy(self) -> None:
        """patterns None: any origin on a public route, the same origin only
        on an authenticated one; "same-origin" is usable as a pattern."""
        evil, own = "https://evil.example", "http://app.example:8080"
        host = "app.example:8080"
        self.assertTrue(origin_allowed(evil, None, host=host))
        self.assertFalse(origin_allowed(evil, None, host=host, authenticated=True))
        self.assertTrue(origin_allowed(own, None, host=host, authenticated=True))
        self.assertFalse(origin_allowed("null", None, host=host, authenticated=True))
        patterns = ("same-origin", "https://*.partner.example")
        self.assertTrue(origin_allowed(own, patterns, host=host))
        self.assertTrue(
            origin_allowed("https://a.partner.example", patterns, host=host)
        )
        self.assertFalse(origin_allowed(evil, patterns, host=host))

    def test_accepts_other_sites(self) -> None:
        """Patterns that let any site in are recognised, for the warning."""
        for patterns in (("*",), ("https://*",), ("*://*", "https://a.example")):
            self.assertTrue(accepts_other_sites(patterns), patterns)
        for patterns in (None, (), ("same-origin",), ("https://*.example.com",)):
            self.assertFalse(accepts_other_sites(patterns), patterns)


class SplitHostTests(SynchronousTestCase):
    """split_host lowercases a Host value and removes the port."""

    def test_values(self) -> None:
        """Names, ports, IPv6 literals and odd values map as documented."""
        cases = {
            "example.com": "example.com",
            "Example.COM:8080": "example.com",
            " host:1 ": "host",
            "[::1]:8080": "[::1]",
            "[::1]": "[::1]",
            "[FE80::A]:80": "[fe80::a]",
            "": "",
            "*": "*",
            "[::1": "[::1",
        }
        self.assertEqual({k: split_host(k) for k in cases}, cases)


class TargetTests(SynchronousTestCase):
    """One reading of the request target: origin form, path as sent."""

    def test_path_is_never_a_url(self) -> None:
        """//x/admin is a path, not host x; ;params stay in the path."""
        self.assertEqual(parse("GET //x/admin?q=1 HTTP/1.1").path, "//x/admin")
        self.assertEqual(parse("GET /admin;x HTTP/1.1").path, "/admin;x")
        self.assertEqual(parse("GET //x/a?q=1 HTTP/1.1").params, {"q": ["1"]})

    def test_refused_spellings(self) -> None:
        """Absolute and authority forms, fragments, dot segments (also
        encoded or with ;params) and encoded slashes are refused."""
        for target in [
            "http://x/admin",
            "example.com:443",
            "?q=1",
            "*",
            "/a#b",
            "/./admin",
            "/x/../admin",
            "/x/..",
            "/%2e/admin",
            "/%2E%2e/admin",
            "/..;/admin",
            "/%2Fadmin",
            "/a%5cb",
            "/%61dmin",
            "/adm%69n",
            "/%41",
            "/%7Euser",
            "/a%2Db",
            "/a%5fb",
            "/%30",
            "/%2eenv",
        ]:
            self.assertIsNotNone(target_problem(target), target)

    def test_unreserved_escape_reason(self) -> None:
        """The reason names the escape (the log line; the answer is 400)."""
        self.assertEqual(
            target_problem("/%61dmin"),
            "the request path has a percent-encoded unreserved character (%61)",
        )

    def test_accepted_spellings(self) -> None:
        """Other targets are kept as sent; * only when allowed; escapes of
        characters that are not unreserved, and any escape in the query."""
        for target in [
            "/",
            "//x/admin",
            "/admin;",
            "/a.b/.c/..d",
            "/a?x=%41&y=../",
            "/my%20files",
            "/caf%C3%A9",
            "/a%3Bb",
            "/100%25",
            "/%zz",
        ]:
            self.assertIsNone(target_problem(target), target)
        self.assertIsNone(target_problem("*", allow_asterisk=True))

    def test_version(self) -> None:
        """A handshake needs HTTP/1.1 or higher (RFC 6455, 4.1)."""
        for version in ["HTTP/1.1", "HTTP/2.0"]:
            self.assertIsNone(version_problem(version), version)
        for version in ["HTTP/1.0", "HTTP/0.9", "http/1.1", "HTTP/1", "", "HTTP/1.1x"]:
            self.assertIn("HTTP/1.1 or higher", version_problem(version) or "")

    @given(st.text(alphabet="/.%2eEfF;ab", max_size=12))
    def test_no_dot_segment_passes(self, path: str) -> None:
        """Whatever passes has no segment that decodes to . or .. (property)."""
        from urllib.parse import unquote

        target = "/" + path
        if target_problem(target) is None:
            for segment in target.split("/"):
                self.assertNotIn(unquote(segment).partition(";")[0], (".", ".."))
                self.assertNotIn("%2f", segment.lower())


class BodyProblemTests(SynchronousTestCase):
    """A handshake announcing a body is refused."""

    def test_body(self) -> None:
        """Content-Length other than 0, or any Transfer-Encoding: refused."""
        self.assertIsNone(body_problem(parse("GET / HTTP/1.1")))
        self.assertIsNone(body_problem(parse("GET / HTTP/1.1", "Content-Length: 0")))
        for header in ["Content-Length: 5", "Transfer-Encoding: chunked"]:
            self.assertIsNotNone(body_problem(parse("GET / HTTP/1.1", header)))
