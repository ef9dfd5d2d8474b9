"""wsplugin.tls: TLS options, loading, reload, the peer certificate and
``verify_peer``, without sockets (the loopback tests are in
tests/integration/test_tls.py)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer

from wsplugin import ConfigError, Reject, WebSocketServer
from wsplugin.testing import (
    FakeClient,
    FakeTransport,
    ServerHarness,
    handshake_request,
)
from wsplugin.tls import (
    PeerCertificate,
    ServerTLS,
    TLSOptions,
    endpoint_is_tls,
    peer_certificate,
    tls_wrappable,
)


class Files:
    """PEM files of one certificate issued by ``ca`` (made at test time)."""

    def __init__(self, test: SynchronousTestCase, ca: trustme.CA, *names: str):
        self.dir = Path(test.mktemp())
        self.dir.mkdir(parents=True)
        issued = ca.issue_cert(*names)
        self.issued = issued
        self.cert = str(self.dir / "cert.pem")
        self.key = str(self.dir / "key.pem")
        self.both = str(self.dir / "both.pem")
        self.ca = str(self.dir / "ca.pem")
        issued.cert_chain_pems[0].write_to_path(self.cert)
        issued.private_key_pem.write_to_path(self.key)
        issued.private_key_and_cert_chain_pem.write_to_path(self.both)
        ca.cert_pem.write_to_path(self.ca)

    def fingerprint(self) -> str:
        cert = x509.load_pem_x509_certificate(self.issued.cert_chain_pems[0].bytes())
        return cert.fingerprint(hashes.SHA256()).hex()


def custom_certificate() -> x509.Certificate:
    """A self-signed certificate with one SAN of each kind."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "alice"),
        ]
    )
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    sans = x509.SubjectAlternativeName(
        [
            x509.DNSName("alice.example"),
            x509.RFC822Name("alice@example.org"),
            x509.UniformResourceIdentifier("spiffe://example/alice"),
            x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(sans, critical=False)
        .sign(key, hashes.SHA256())
    )


# what CertificateOptions reads from the TLS protocol it makes a connection for
TLS_PROTOCOL = SimpleNamespace(factory=SimpleNamespace(wrappedFactory=Factory()))


class TLSOptionsTests(SynchronousTestCase):
    """TLSOptions validates its values; load() reads and checks the files."""

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.files = Files(self, self.ca, "localhost")

    def test_defaults(self) -> None:
        """TLS 1.2 minimum, Twisted's ciphers, ALPN chosen by the server
        (http/1.1 unless it serves pages), no client CA; the key defaults to
        the certificate file."""
        options = TLSOptions(certificate=Path(self.files.both))
        self.assertEqual(
            (
                options.certificate,
                options.key,
                options.min_version,
                options.ciphers,
                options.alpn,
                options.client_ca,
            ),
            (self.files.both, None, "1.2", None, None, None),
        )
        self.assertEqual(options.protocols(), ("http/1.1",))
        context = options.load().getContext()
        self.assertTrue(context.set_options(0) & SSL.OP_NO_TLSv1)
        self.assertTrue(context.set_options(0) & SSL.OP_NO_TLSv1_1)
        self.assertFalse(context.set_options(0) & SSL.OP_NO_TLSv1_2)
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_min_version_13(self) -> None:
        """min_version "1.3" disables TLS 1.2 in the context."""
        options = TLSOptions(certificate=self.files.both, min_version="1.3")
        flags = options.load().getContext().set_options(0)
        self.assertTrue(flags & SSL.OP_NO_TLSv1_2)
        self.assertFalse(flags & SSL.OP_NO_TLSv1_3)

    def test_client_cert_modes(self) -> None:
        """client_ca asks for a certificate: required fails the handshake
        without one, optional does not."""
        required = TLSOptions(certificate=self.files.both, client_ca=self.files.ca)
        optional = TLSOptions(
            certificate=self.files.both, client_ca=self.files.ca, client_cert="optional"
        )
        self.assertEqual(
            required.load().getContext().get_verify_mode(),
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE,
        )
        self.assertEqual(
            optional.load().getContext().get_verify_mode(),
            SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE,
        )

    def test_alpn_offers_h2_with_pages(self) -> None:
        """By default h2 is offered, before http/1.1, only to a server that
        serves HTTP pages, and only with the h2 package; naming h2 without
        pages, or without the package, is a ConfigError naming the fix."""
        import wsplugin.tls

        auto = TLSOptions(certificate=self.files.both)
        explicit = TLSOptions(certificate=self.files.both, alpn=("h2", "http/1.1"))
        self.patch(wsplugin.tls, "H2_ENABLED", True)
        self.assertEqual(auto.protocols(serves_http=True), ("h2", "http/1.1"))
        self.assertEqual(auto.protocols(serves_http=False), ("http/1.1",))
        self.assertEqual(explicit.protocols(serves_http=True), ("h2", "http/1.1"))
        e = self.assertRaises(ConfigError, explicit.protocols, serves_http=False)
        self.assertIn("serves no HTTP pages", str(e))
        self.patch(wsplugin.tls, "H2_ENABLED", False)
        self.assertEqual(auto.protocols(serves_http=True), ("http/1.1",))
        e = self.assertRaises(ConfigError, explicit.protocols, serves_http=True)
        self.assertIn("pip install 'wsplugin[http2]'", str(e))

    def test_bad_values(self) -> None:
        """Each bad value raises ConfigError naming the setting."""
        cases: list[tuple[dict[str, Any], str]] = [
            ({"min_version": "1.1"}, "min_version"),
            ({"min_version": 1.3}, "min_version"),
            ({"client_cert": "maybe"}, "client_cert"),
            ({"ciphers": ""}, "ciphers"),
            ({"alpn": "http/1.1"}, "alpn takes a list"),
            ({"alpn": ("",)}, "alpn names"),
            ({"alpn": ("é",)}, "alpn names"),
            ({"key": 42}, "key must be a file path"),
            ({"chain": ""}, "chain must be a file path"),
        ]
        for kwargs, fragment in cases:
            e = self.assertRaises(
                ConfigError, TLSOptions, certificate=self.files.both, **kwargs
            )
            self.assertIn(fragment, str(e), kwargs)
        self.assertRaises(ConfigError, TLSOptions, certificate=None)

    def test_bad_files(self) -> None:
        """Missing files, files without PEM, a key of another certificate,
        an encrypted key and a cipher string selecting nothing all fail at
        load time with the path and the reason."""
        other = Files(self, trustme.CA(), "localhost")
        junk = self.files.dir / "junk.pem"
        junk.write_text("hello")
        key = serialization.load_pem_private_key(
            self.files.issued.private_key_pem.bytes(), None
        )
        encrypted = self.files.dir / "encrypted.pem"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        cases: list[tuple[dict[str, Any], str]] = [
            ({"certificate": "/nonexistent/c.pem"}, "no such file"),
            ({"certificate": str(junk), "key": self.files.key}, "no PEM certificate"),
            ({"certificate": self.files.cert}, "no PEM private key"),
            (
                {"certificate": self.files.cert, "key": other.key},
                "does not belong to the certificate",
            ),
            (
                {"certificate": self.files.cert, "key": str(encrypted)},
                "the key is encrypted",
            ),
            (
                {"certificate": self.files.both, "chain": str(junk)},
                f"tls chain {junk}: no PEM certificate",
            ),
            (
                {"certificate": self.files.both, "client_ca": "/nonexistent/ca"},
                "tls client_ca /nonexistent/ca",
            ),
            (
                {"certificate": self.files.both, "ciphers": "NO-SUCH-CIPHER"},
                "select no cipher",
            ),
        ]
        for kwargs, fragment in cases:
            e = self.assertRaises(ConfigError, TLSOptions(**kwargs).load)
            self.assertIn(fragment, str(e), kwargs)
            self.assertNotIn("secret", str(e))

    def test_fullchain_and_chain(self) -> None:
        """Certificates after the first in the certificate file, then those
        in chain, are sent as the chain; the first one is the server's."""
        intermediate = self.ca.create_child_ca()
        issued = intermediate.issue_cert("localhost")
        full = self.files.dir / "full.pem"
        full.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))
        key = self.files.dir / "ikey.pem"
        issued.private_key_pem.write_to_path(str(key))
        options = TLSOptions(
            certificate=str(full), key=str(key), chain=self.files.ca
        ).load()
        leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
        self.assertEqual(options.certificate, leaf)
        self.assertEqual(len(options.extraCertChain), 2)


class PeerCertificateTests(SynchronousTestCase):
    """PeerCertificate describes a certificate for allow/verify_peer."""

    def test_fields(self) -> None:
        """Subject and issuer in RFC 4514, SANs with their types, the
        SHA-256 fingerprint in lowercase hex, not_after, common_name."""
        cert = custom_certificate()
        info = PeerCertificate.from_cryptography(cert)
        self.assertEqual(info.subject, "CN=alice,O=Example")
        self.assertEqual(info.issuer, "CN=alice,O=Example")
        self.assertEqual(
            info.sans,
            (
                "DNS:alice.example",
                "email:alice@example.org",
                "URI:spiffe://example/alice",
                "IP:10.0.0.7",
                "IP:::1",
            ),
        )
        self.assertEqual(info.fingerprint, cert.fingerprint(hashes.SHA256()).hex())
        self.assertEqual(len(info.fingerprint), 64)
        self.assertEqual(info.not_after.year, 2026)
        self.assertEqual(info.common_name, "alice")

    def test_from_transport(self) -> None:
        """A plain transport has no certificate; a TLS one gives the peer's
        (as pyOpenSSL returns it), or None when the client sent none."""
        self.assertIsNone(peer_certificate(StringTransport()))
        self.assertIsNone(peer_certificate(None))
        cert = custom_certificate()
        tls = TLSTransport(MemoryReactorClock(), IPv4Address("TCP", "10.0.0.7", 1))
        tls.certificate = crypto.X509.from_cryptography(cert)
        info = peer_certificate(tls)
        self.assertEqual(info, PeerCertificate.from_cryptography(cert))
        tls.certificate = None
        self.assertIsNone(peer_certificate(tls))


class ServerTLSTests(SynchronousTestCase):
    """ServerTLS makes connections from the current options and reloads."""

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.files = Files(self, self.ca, "localhost")
        self.options = TLSOptions(certificate=self.files.cert, key=self.files.key)

    def test_connection(self) -> None:
        """Each call gives a new server-side SSL.Connection."""
        tls = ServerTLS(self.options)
        first = tls.serverConnectionForTLS(TLS_PROTOCOL)
        self.assertIsInstance(first, SSL.Connection)
        self.assertIsNot(first, tls.serverConnectionForTLS(TLS_PROTOCOL))
        self.assertEqual(tls.certificate.fingerprint, self.files.fingerprint())

    def test_reload(self) -> None:
        """reload() reads the files again: new connections use the new
        certificate (the context of one made before is unchanged)."""
        tls = ServerTLS(self.options)
        before = tls.serverConnectionForTLS(TLS_PROTOCOL)
        renewed = Files(self, self.ca, "localhost")
        os.replace(renewed.cert, self.files.cert)
        os.replace(renewed.key, self.files.key)
        with capturedLogs() as events:
            info = tls.reload()
        self.assertEqual(info.fingerprint, renewed.fingerprint())
        self.assertEqual(tls.certificate, info)
        after = tls.serverConnectionForTLS(TLS_PROTOCOL)
        self.assertIsNot(after.get_context(), before.get_context())
        self.assertIn("TLS certificate reloaded", _text(events))

    def test_failed_reload_keeps_the_old(self) -> None:
        """A reload from a broken file raises, logs why, and keeps the
        certificate in use."""
        tls = ServerTLS(self.options)
        context = tls.serverConnectionForTLS(TLS_PROTOCOL).get_context()
        Path(self.files.cert).write_text("truncated")
        with capturedLogs() as events:
            e = self.assertRaises(ConfigError, tls.reload)
        self.assertIn("no PEM certificate", str(e))
        self.assertIn(
            "TLS reload failed, keeping the current certificate", _text(events)
        )
        self.assertIn("no PEM certificate", _text(events))
        self.assertIs(tls.serverConnectionForTLS(TLS_PROTOCOL).get_context(), context)
        self.assertEqual(tls.certificate.fingerprint, self.files.fingerprint())

    def test_not_options(self) -> None:
        """Anything but TLSOptions is refused."""
        self.assertRaises(ConfigError, ServerTLS, {"certificate": "x"})


class EndpointTests(SynchronousTestCase):
    """Which endpoints tls= wraps, and which it refuses."""

    def test_wrappable(self) -> None:
        """tcp:, tcp6:, unix:, systemd: are wrapped; ssl:, tls: and unknown
        kinds are refused."""
        for ok in (
            "tcp:0",
            "TCP6:0:interface=\\:\\:1",
            "unix:/x",
            "systemd:domain=INET",
        ):
            tls_wrappable(ok)
        for refused in ("ssl:443", "tls:/certs", "onion:80", "le:/x:tcp:443"):
            self.assertRaises(ConfigError, tls_wrappable, refused)
        self.assertTrue(endpoint_is_tls("ssl:443:privateKey=k.pem"))
        self.assertFalse(endpoint_is_tls("tcp:443"))

    def test_server_refuses(self) -> None:
        """WebSocketServer(tls=...) with an ssl: endpoint raises at once."""
        files = Files(self, trustme.CA(), "localhost")
        self.assertRaises(
            ConfigError,
            WebSocketServer,
            None,
            endpoints=["tcp:0", "ssl:0:privateKey=k.pem"],
            tls=TLSOptions(certificate=files.both),
            reactor=MemoryReactorClock(),
        )

    def test_reload_without_tls(self) -> None:
        """reload_tls() on a server without tls= says why it cannot."""
        server = WebSocketServer(None, reactor=MemoryReactorClock())
        e = self.assertRaises(ConfigError, server.reload_tls)
        self.assertIn("no tls= options", str(e))


class CertTransport(FakeTransport):
    """A FakeTransport with a peer certificate."""

    certificate: Any = None

    def getPeerCertificate(self) -> Any:
        return self.certificate


@implementer(ISSLTransport)
class TLSTransport(CertTransport):
    """A CertTransport that is an ISSLTransport."""


class LateTLSTransport(CertTransport):
    """Becomes an ISSLTransport after connectionMade: Autobahn reads the TLS
    channel id of a TLS transport at connectionMade, which only a real
    TLSMemoryBIOProtocol has; the certificate is read later, at the
    handshake."""


class Verifier:
    """A handler with verify_peer, an authenticator-like log, and allow."""

    def __init__(self, verdict: Any = True) -> None:
        self.verdict = verdict
        self.events: list[Any] = []

    def verify_peer(self, conn: Any, certificate: Any) -> Any:
        self.events.append(("verify_peer", certificate))
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict

    def allow(self, conn: Any) -> bool:
        self.events.append(("allow", conn.request.peer_certificate))
        return True


class Auth:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def authenticate(self, conn: Any) -> str:
        self.events.append(("auth",))
        return "alice"


class VerifyPeerTests(SynchronousTestCase):
    """verify_peer fires after TLS, before auth and allow; False refuses."""

    def connect(self, handler: Any, cert: Any = None, **kw: Any) -> FakeClient:
        clock = MemoryReactorClock()
        server = WebSocketServer(None, reactor=clock, heartbeat_interval=0)
        server.register_handler("*", "/", handler, default_host=True, **kw)
        harness = ServerHarness(server)
        peer = IPv4Address("TCP", "10.0.0.7", 50000)
        protocol = server.factory.buildProtocol(peer)
        transport = LateTLSTransport(clock, peer)
        transport.certificate = cert
        transport.protocol = protocol
        protocol.makeConnection(transport)
        alsoProvides(transport, ISSLTransport)
        return FakeClient(harness, protocol, transport)

    def test_order_and_certificate(self) -> None:
        """verify_peer gets the certificate first, then the authenticator,
        then allow sees the same certificate on conn.request."""
        cert = custom_certificate()
        handler = Verifier(True)
        client = self.connect(
            handler, crypto.X509.from_cryptography(cert), auth=Auth(handler.events)
        )
        response = client.handshake()
        self.assertEqual(response.status, 101)
        expected = PeerCertificate.from_cryptography(cert)
        self.assertEqual(
            handler.events, [("verify_peer", expected), ("auth",), ("allow", expected)]
        )
        self.assertEqual(client.connection.user, "alice")

    def test_false_refuses_403(self) -> None:
        """False answers 403 and neither auth nor allow runs."""
        handler = Verifier(False)
        with capturedLogs() as events:
            response = self.connect(handler).handshake()
        self.assertEqual(response.status, 403)
        self.assertEqual(handler.events, [("verify_peer", None)])
        self.assertIn("verify_peer refused 10.0.0.7 (no certificate)", _text(events))

    def test_reject_status(self) -> None:
        """A Reject, returned or raised, answers with its status."""
        for verdict in (Reject(401, "Unauthorized"), Reject(495, "Bad Certificate")):
            response = self.connect(Verifier(verdict)).handshake()
            self.assertEqual(response.status, verdict.status)

    def test_async(self) -> None:
        """A Deferred verdict holds the handshake until it fires."""
        handler = Verifier()
        pending: Deferred[Any] = Deferred()
        handler.verdict = pending
        client = self.connect(handler)
        client.send_raw(handshake_request("/", "localhost"))
        self.assertIsNone(client.read_response())
        pending.callback(None)
        client.harness.flush()
        response = client.read_response()
        assert response is not None
        self.assertEqual(response.status, 101)

    def test_bad_verdict_and_error(self) -> None:
        """A verdict that is not True/False/None/Reject, or an exception,
        refuses the handshake (500-class answer, never 101)."""
        for verdict in ("yes", RuntimeError("boom")):
            response = self.connect(Verifier(verdict)).handshake()
            self.assertEqual(response.status, 500, verdict)
        self.assertEqual(len(self.flushLoggedErrors(TypeError, RuntimeError)), 2)


def _text(events: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)
