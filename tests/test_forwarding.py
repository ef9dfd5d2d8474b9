"""wsplugin._forwarding: the header rules of a forwarding gateway (RFC 9110
section 7.6) and the upstream URL's parts, without I/O."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from wsplugin._forwarding import (
    HOP_BY_HOP,
    downstream_headers,
    join_path,
    split_upstream,
    upstream_headers,
)


def headers(**values: str) -> Headers:
    h = Headers()
    for name, value in values.items():
        h.addRawHeader(name.replace("_", "-").encode(), value.encode())
    return h


def raw(h: Headers) -> dict[str, list[str]]:
    return {
        k.decode().lower(): [v.decode() for v in vs] for k, vs in h.getAllRawHeaders()
    }


class HeaderRuleTests(SynchronousTestCase):
    """What goes upstream and what comes back (RFC 9110 section 7.6)."""

    def test_hop_by_hop_dropped_upstream(self) -> None:
        """Hop-by-hop fields, and any field the Connection header lists, are
        not forwarded; neither are Host, Content-Length and Expect (set anew
        by the client library)."""
        out = upstream_headers(
            headers(
                Connection="keep-alive, X-Private",
                Keep_Alive="timeout=5",
                Proxy_Connection="keep-alive",
                TE="trailers",
                Trailer="X-T",
                Transfer_Encoding="chunked",
                Upgrade="websocket",
                Proxy_Authorization="Basic eDp5",
                X_Private="secret",
                Host="public.example",
                Content_Length="5",
                Expect="100-continue",
                Accept="text/html",
            ),
            client="198.51.100.7",
            secure=False,
            host=b"public.example",
        )
        self.assertEqual(
            raw(out),
            {
                "accept": ["text/html"],
                "x-forwarded-for": ["198.51.100.7"],
                "x-forwarded-proto": ["http"],
                "x-forwarded-host": ["public.example"],
                "via": ["1.1 wsplugin"],
            },
        )

    def test_forwarded_for_appended(self) -> None:
        """X-Forwarded-For gets the peer appended to what came in; Via too."""
        out = upstream_headers(
            headers(X_Forwarded_For="203.0.113.1, 10.0.0.1", Via="1.0 edge"),
            client="10.0.0.2",
            secure=True,
            host=None,
        )
        self.assertEqual(
            out.getRawHeaders(b"x-forwarded-for"), [b"203.0.113.1, 10.0.0.1, 10.0.0.2"]
        )
        self.assertEqual(out.getRawHeaders(b"via"), [b"1.0 edge", b"1.1 wsplugin"])
        self.assertEqual(out.getRawHeaders(b"x-forwarded-proto"), [b"https"])

    def test_preserve_host(self) -> None:
        """preserve_host sends the client's Host upstream."""
        out = upstream_headers(
            headers(Host="a.example"),
            client="c",
            secure=False,
            host=b"a.example",
            preserve_host=True,
        )
        self.assertEqual(out.getRawHeaders(b"host"), [b"a.example"])

    def test_downstream(self) -> None:
        """Hop-by-hop fields of the response are dropped, the rest kept,
        repeated ones (Set-Cookie) included."""
        out = downstream_headers(
            headers(
                Connection="close, X-Hop",
                X_Hop="1",
                Keep_Alive="timeout=5",
                Transfer_Encoding="chunked",
                Proxy_Authenticate="Basic",
                Content_Type="text/plain",
            )
        )
        out_h = headers(Set_Cookie="a=1")
        out_h.addRawHeader(b"set-cookie", b"b=2")
        self.assertEqual(raw(out), {"content-type": ["text/plain"]})
        self.assertEqual(raw(downstream_headers(out_h)), {"set-cookie": ["a=1", "b=2"]})

    def test_urls(self) -> None:
        """Upstream URLs are split into origin and base path; bad ones are
        refused; paths join with one slash."""
        self.assertEqual(
            split_upstream("https://h.example:8443/v1"),
            (b"https://h.example:8443", b"/v1"),
        )
        self.assertEqual(split_upstream("http://h"), (b"http://h", b""))
        for bad in [
            "ftp://h/",
            "http:///x",
            "http://h/?q=1",
            "http://h/#f",
            "http://u:p@h/",
            "http://h:99999/",
            "h:80",
        ]:
            with self.assertRaises(ValueError, msg=bad):
                split_upstream(bad)
        self.assertEqual(join_path(b"", []), b"/")
        self.assertEqual(join_path(b"/v1", []), b"/v1")
        self.assertEqual(join_path(b"/v1/", [b"a", b"b"]), b"/v1/a/b")
        self.assertEqual(join_path(b"", [b""]), b"/")
        self.assertEqual(join_path(b"/v1", [b""]), b"/v1/")


class MoreHeaderRuleTests(SynchronousTestCase):
    """The remaining rules: defaults behind a proxy, this hop's Via, and
    the request's own headers left as they were."""

    def test_trusted_proxy_without_headers(self) -> None:
        """Behind a trusted proxy that set nothing, the headers are set from
        what this server saw, as without one."""
        out = upstream_headers(
            Headers(), client="10.0.0.9", secure=True, host=b"h", trusted_proxies=2
        )
        self.assertEqual(
            raw(out),
            {
                "x-forwarded-for": ["10.0.0.9"],
                "x-forwarded-proto": ["https"],
                "x-forwarded-host": ["h"],
                "via": ["1.1 wsplugin"],
            },
        )

    def test_own_via_and_input_untouched(self) -> None:
        """This hop's Via entry is the caller's; the received headers are
        not changed (a hook may still read them)."""
        received = headers(Connection="close", X_Forwarded_For="1.2.3.4")
        before = raw(received)
        out = upstream_headers(
            received, client="5.6.7.8", secure=False, host=None, via=b"1.1 gw"
        )
        self.assertEqual(out.getRawHeaders(b"via"), [b"1.1 gw"])
        self.assertEqual(raw(received), before)
        self.assertFalse(out.hasHeader(b"connection"))

    def test_preserve_host_without_host(self) -> None:
        """preserve_host without a Host header sends none (the client
        library then sets the upstream's)."""
        out = upstream_headers(
            headers(Host="x"), client="c", secure=False, host=None, preserve_host=True
        )
        self.assertFalse(out.hasHeader(b"host"))

    def test_hop_by_hop_names(self) -> None:
        """RFC 9110's hop-by-hop fields, and RFC 2616's for this hop too,
        all lower case."""
        self.assertEqual(
            HOP_BY_HOP,
            {
                b"connection",
                b"keep-alive",
                b"proxy-connection",
                b"te",
                b"trailer",
                b"transfer-encoding",
                b"upgrade",
                b"proxy-authenticate",
                b"proxy-authorization",
            },
        )
        dropped = downstream_headers(
            headers(TE="trailers", Trailer="X", Upgrade="h2c", Vary="Accept")
        )
        self.assertEqual(raw(dropped), {"vary": ["Accept"]})
