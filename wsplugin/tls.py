"""TLS the user controls (seeds: TMS ``UseSSL``, sgc ``SSLOptions``).

:class:`TLSOptions` describes the server's TLS: certificate, key and chain
files, the lowest TLS version, the TLS 1.2 cipher string, ALPN, and
client-certificate verification against a CA file. Give it to the server and
every endpoint speaks TLS::

    server = WebSocketServer(
        Echo(),
        endpoints=["tcp:8443", "tcp6:8443"],
        tls=TLSOptions(certificate="fullchain.pem", key="key.pem"),
    )

The endpoints stay ordinary ``tcp:``, ``tcp6:``, ``unix:`` or ``systemd:``
strings; the server listens on each with Twisted's TLS factory inside its
connection gate (:func:`wsplugin._gate.listening_gate`). Endpoints that are TLS
already (``ssl:``, ``tls:``) or whose kind is unknown are refused, so a port
never stays in cleartext by accident.

The TLS context comes from Twisted's
:class:`~twisted.internet.ssl.CertificateOptions`; :class:`ServerTLS` holds
the current one and swaps it on :meth:`ServerTLS.reload` (``server.reload_tls()``,
SIGHUP under ``twistd ws``): new handshakes get the new certificate, open
connections keep theirs, and a reload that cannot read its files keeps the
old one.

A client certificate, when one was verified, reaches the application as
``conn.request.peer_certificate`` (:class:`PeerCertificate`), and a route
handler's ``verify_peer(conn, certificate)`` may refuse it before
authentication and ``allow``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, ISSLTransport
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.http import H2_ENABLED
from zope.interface import implementer

# with_peer_check and PeerCheck keep their old import path (wsplugin._decision)
from wsplugin._tlshooks import PeerCheck as PeerCheck
from wsplugin._tlshooks import on_hangup
from wsplugin._tlshooks import with_peer_check as with_peer_check
from wsplugin.errors import ConfigError

__all__ = [
    "CLIENT_CERT_MODES",
    "TLS_VERSIONS",
    "PeerCertificate",
    "ServerTLS",
    "TLSOptions",
    "endpoint_is_tls",
    "on_hangup",
    "peer_certificate",
    "tls_wrappable",
]

TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
"""Lowest TLS versions :class:`TLSOptions` accepts, by name."""

CLIENT_CERT_MODES = ("optional", "required")
"""How a client certificate is asked for when ``client_ca`` is set."""

# Endpoint kinds that give a plain byte stream the server can put TLS on.
_WRAPPABLE = frozenset({"tcp", "tcp6", "unix", "systemd"})
# Endpoint kinds that speak TLS themselves (Twisted's ssl: and tls:).
_TLS_KINDS = frozenset({"ssl", "tls"})


PathLike = str | os.PathLike[str]


def _kind(description: str) -> str:
    return description.split(":", 1)[0].strip().lower()


def endpoint_is_tls(description: str) -> bool:
    """True for an endpoint string that speaks TLS itself (``ssl:``, ``tls:``)."""
    return _kind(description) in _TLS_KINDS


def tls_wrappable(description: str) -> None:
    """Check that ``tls=`` can be put on the endpoint ``description``.

    Raises:
        ConfigError: the endpoint speaks TLS already (``ssl:``, ``tls:``:
            wrapping it would run TLS inside TLS), or its kind is not one of
            ``tcp:``, ``tcp6:``, ``unix:``, ``systemd:`` (a plugin endpoint
            may be TLS itself, or not a byte stream).
    """
    kind = _kind(description)
    if kind in _TLS_KINDS:
        raise ConfigError(
            f"endpoint {description!r} speaks TLS itself; with TLS options use a "
            "tcp:, tcp6:, unix: or systemd: endpoint instead"
        )
    if kind not in _WRAPPABLE:
        raise ConfigError(
            f"cannot put TLS on endpoint {description!r}: only tcp:, tcp6:, "
            "unix: and systemd: endpoints can be wrapped"
        )


@dataclass(frozen=True, kw_only=True)
class TLSOptions:
    """The server's TLS settings (seed sgc ``SSLOptions``).

    Only paths are kept: the files are read when the server is built and
    again on every reload, so a renewed certificate is picked up from the
    same paths.

    Attributes:
        certificate: PEM file with the server certificate, optionally
            followed by its intermediates (a ``fullchain.pem``) and by the
            key.
        key: PEM file with the unencrypted private key. Default: the
            ``certificate`` file.
        chain: PEM file with more intermediate certificates, sent after
            those in ``certificate``.
        min_version: Lowest TLS version accepted: ``"1.2"`` (the default;
            every browser since 2014 speaks it) or ``"1.3"`` (refuses clients
            limited to 1.2). TLS 1.0 and 1.1 are never accepted.
        ciphers: OpenSSL cipher string for TLS 1.2 (e.g.
            ``"ECDHE+AESGCM:ECDHE+CHACHA20"``, which requires forward
            secrecy). Default: Twisted's: forward-secret AES-GCM and
            ChaCha20 first, no RC4/3DES/MD5, static RSA last for old
            clients. TLS 1.3 suites are OpenSSL's, all of them strong; this
            string does not change them.
        alpn: Protocols offered over ALPN, most preferred first. Default
            None: ``("h2", "http/1.1")`` when the server serves HTTP pages
            (``http=``, ``static=``, ...) and the ``h2`` package is
            installed (``pip install 'wsplugin[http2]'``), so browsers load
            pages and files over HTTP/2 and open WebSockets over HTTP/1.1
            on the same port; ``("http/1.1",)`` otherwise, what a WebSocket
            upgrade runs on. A client that offers ALPN without any of them
            (``h2`` alone to a WebSocket-only server) fails the TLS handshake
            instead of sending HTTP/2 to an HTTP/1.1 server. Naming ``h2``
            yourself without the package, or on a server without HTTP
            pages, is a ``ConfigError``. ``()`` turns ALPN off: offers are
            ignored and nothing is negotiated.
        client_ca: PEM file with the CA certificates that client
            certificates must chain to. Default: client certificates are not
            asked for.
        client_cert: With ``client_ca``: ``"required"`` (the default; a
            client without a valid certificate fails the TLS handshake) or
            ``"optional"`` (a client may send none; one it sends must be
            valid).
    """

    certificate: PathLike
    key: PathLike | None = None
    chain: PathLike | None = None
    min_version: str = "1.2"
    ciphers: str | None = None
    alpn: tuple[str, ...] | None = None
    client_ca: PathLike | None = None
    client_cert: str = "required"

    def __post_init__(self) -> None:
        for name in ("certificate", "key", "chain", "client_ca"):
            value = getattr(self, name)
            if value is None and name != "certificate":
                continue
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise ConfigError(f"tls {name} must be a file path, not {value!r}")
            object.__setattr__(self, name, os.fspath(value))
        if self.min_version not in TLS_VERSIONS:
            raise ConfigError(
                f"tls min_version must be one of {', '.join(TLS_VERSIONS)}, "
                f"not {self.min_version!r}"
            )
        if self.client_cert not in CLIENT_CERT_MODES:
            raise ConfigError(
                f"tls client_cert must be one of {', '.join(CLIENT_CERT_MODES)}, "
                f"not {self.client_cert!r}"
            )
        if self.ciphers is not None and (
            not isinstance(self.ciphers, str) or not self.ciphers.strip()
        ):
            raise ConfigError(
                f"tls ciphers must be an OpenSSL cipher string, not {self.ciphers!r}"
            )
        if self.alpn is None:
            return
        if isinstance(self.alpn, str):
            raise ConfigError(
                f"tls alpn takes a list of protocol names, not the string {self.alpn!r}"
            )
        alpn = tuple(self.alpn)
        for name in alpn:
            if (
                not isinstance(name, str)
                or not name
                or not name.isascii()
                or len(name) > 255
            ):
                raise ConfigError(
                    f"tls alpn names are 1-255 ASCII characters, not {name!r}"
                )
        object.__setattr__(self, "alpn", alpn)

    def protocols(self, serves_http: bool | None = None) -> tuple[str, ...]:
        """The ALPN protocols offered (see :attr:`alpn`).

        Args:
            serves_http: Whether the server serves HTTP pages on these
                ports; None when not known yet (an explicit ``h2`` is then
                only checked against the installed packages).

        Raises:
            ConfigError: ``h2`` is named but the ``h2`` package is missing,
                or the server serves no HTTP pages.
        """
        if self.alpn is None:
            if serves_http and H2_ENABLED:
                return ("h2", "http/1.1")
            return ("http/1.1",)
        if "h2" in self.alpn:
            if not H2_ENABLED:
                raise ConfigError(
                    "tls alpn offers h2, but HTTP/2 needs the h2 package: "
                    "pip install 'wsplugin[http2]'"
                )
            if serves_http is False:
                raise ConfigError(
                    "tls alpn offers h2, but this server serves no HTTP pages "
                    "(http=, static=, before_request=): WebSocket upgrades need "
                    "http/1.1"
                )
        return self.alpn

    def load(self, serves_http: bool | None = None) -> CertificateOptions:
        """Read the files and build Twisted's TLS options from them.

        The context is made at once, so a key that does not match the
        certificate or a cipher string that selects nothing fails here, not
        at the first handshake.

        Args:
            serves_http: Whether the server serves HTTP pages (it decides
                the ALPN protocols: :meth:`protocols`).

        Raises:
            ConfigError: a file is missing or unreadable, holds no PEM of the
                right kind, the key is encrypted or does not match, the
                cipher string selects no cipher, or ``h2`` cannot be offered.
        """
        assert isinstance(self.certificate, str)
        alpn = self.protocols(serves_http)
        certs = _read_certificates(self.certificate, "certificate")
        leaf, chain = certs[0], certs[1:]
        if self.chain is not None:
            chain += _read_certificates(str(self.chain), "chain")
        key = _read_key(str(self.key or self.certificate))
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(
            der, public
        ):
            raise ConfigError(
                f"tls key {self.key or self.certificate} does not belong to the "
                f"certificate in {self.certificate}"
            )
        kwargs: dict[str, Any] = {
            "privateKey": key,
            "certificate": leaf,
            "extraCertChain": chain,
            "acceptableProtocols": [name.encode("ascii") for name in alpn],
        }
        if self.min_version != "1.2":
            kwargs["raiseMinimumTo"] = TLS_VERSIONS[self.min_version]
        if self.ciphers is not None:
            kwargs["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(
                self.ciphers
            )
        cas: list[x509.Certificate] = []
        if self.client_ca is not None:
            cas = _read_certificates(str(self.client_ca), "client_ca")
            authorities = [crypto.X509.from_cryptography(c) for c in cas]
            if self.client_cert == "required":
                kwargs["trustRoot"] = trustRootFromCertificates(
                    [Certificate(c) for c in authorities]
                )
            else:
                # trustRoot always requires a certificate; the older
                # verify/caCerts arguments are the public way to make it
                # optional (a certificate that is sent is still verified)
                kwargs.update(
                    verify=True, caCerts=authorities, requireCertificate=False
                )
        try:
            options = CertificateOptions(**kwargs)
            context = options.getContext()
        except ValueError as e:
            if self.ciphers is not None:  # the cipher string selects nothing
                raise ConfigError(
                    f"tls ciphers {self.ciphers!r} select no cipher that this "
                    "OpenSSL supports"
                ) from None
            raise ConfigError(f"tls: {e}") from None
        except SSL.Error as e:
            raise ConfigError(f"tls: OpenSSL refused the settings: {e}") from None
        for ca in cas:
            # named in the certificate request, so clients holding several
            # certificates (browsers) offer one from these CAs
            context.add_client_ca(ca)
        if not alpn:
            # Twisted installs an ALPN callback even with no protocols, and it
            # answers an ALPN offer with an empty choice, which OpenSSL turns
            # into a fatal alert; this one ignores the offer instead
            context.set_alpn_select_callback(_ignore_alpn)
        return options


def _ignore_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"tls {what} {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"tls {what} {path}: {e.strerror or e}") from None


def _read_certificates(path: str, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"tls {what} {path}: no PEM certificate in the file")
    return certs


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


def _read_key(path: str) -> Any:
    data = _read(path, "key")
    encrypted = ConfigError(
        f"tls key {path}: the key is encrypted; give an unencrypted key file "
        "readable only by the server's user"
    )
    for block in _PEM_BLOCK.finditer(data):
        label = block.group(1)
        if not label.endswith(b"PRIVATE KEY"):
            continue
        if label.startswith(b"ENCRYPTED") or b"ENCRYPTED" in block.group(0)[:200]:
            raise encrypted
        try:
            return serialization.load_pem_private_key(block.group(0), password=None)
        except TypeError:  # it needs a password
            raise encrypted from None
        except ValueError as e:
            raise ConfigError(f"tls key {path}: {e}") from None
    raise ConfigError(f"tls key {path}: no PEM private key in the file")


@dataclass(frozen=True, repr=False)
class PeerCertificate:
    """A client certificate that the TLS handshake verified.

    Two certificates are equal when their fingerprints are. The names are
    read from the certificate when first asked for: reading all of them
    costs about 0.4 ms, too much to spend on every handshake for fields an
    application may never look at.

    Attributes:
        fingerprint: SHA-256 of the DER certificate, 64 lowercase hex
            digits (``openssl x509 -noout -fingerprint -sha256`` prints the
            same digits in upper case with colons).
        certificate: The certificate as a ``cryptography`` object, for
            anything else (extensions, the public key).
        subject: The subject as an RFC 4514 string, e.g.
            ``"CN=alice,O=Example"``.
        issuer: The issuer, in the same form.
        sans: Subject alternative names, each with its type as OpenSSL
            prints it: ``"DNS:alice.example"``, ``"email:a@example.org"``,
            ``"URI:spiffe://example/alice"``, ``"IP:10.0.0.7"``.
        not_after: End of validity (UTC).
        common_name: The subject's first common name (CN), or None.
    """

    fingerprint: str
    certificate: x509.Certificate = field(compare=False)

    @cached_property
    def subject(self) -> str:
        """The subject, RFC 4514."""
        return self.certificate.subject.rfc4514_string()

    @cached_property
    def issuer(self) -> str:
        """The issuer, RFC 4514."""
        return self.certificate.issuer.rfc4514_string()

    @cached_property
    def sans(self) -> tuple[str, ...]:
        """Subject alternative names, with their types."""
        return _sans(self.certificate)

    @cached_property
    def not_after(self) -> datetime:
        """End of validity (UTC)."""
        return self.certificate.not_valid_after_utc

    @cached_property
    def common_name(self) -> str | None:
        """The subject's first common name (CN), if it has one."""
        names = self.certificate.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME
        )
        value = names[0].value if names else None
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        return f"PeerCertificate(subject={self.subject!r}, sha256={self.fingerprint})"

    @classmethod
    def from_cryptography(cls, cert: x509.Certificate) -> PeerCertificate:
        """Describe a ``cryptography`` certificate."""
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(fingerprint=hashlib.sha256(der).hexdigest(), certificate=cert)


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = []
    for name in ext.value:
        if isinstance(name, x509.DNSName):
            names.append(f"DNS:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            names.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            names.append(f"URI:{name.value}")
        elif isinstance(name, x509.IPAddress):
            names.append(f"IP:{ipaddress.ip_address(name.value)}")
        elif isinstance(name, x509.DirectoryName):
            names.append(f"dirName:{name.value.rfc4514_string()}")
    return tuple(names)


def peer_certificate(transport: Any) -> PeerCertificate | None:
    """The verified certificate the client sent over ``transport``, if any.

    None for a connection without TLS and for a client that sent no
    certificate. A certificate that failed verification never gets here:
    OpenSSL ends that TLS handshake first.
    """
    if transport is None or not ISSLTransport.providedBy(transport):
        return None
    try:
        cert = transport.getPeerCertificate()
    except (SSL.Error, AttributeError):
        return None
    if cert is None:
        return None
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    return PeerCertificate.from_cryptography(cert)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The TLS settings a server's listeners use, replaceable at run time.

    Each listener wraps its endpoint with this object; every new TLS
    connection asks it for an ``SSL.Connection``, which it makes from the
    current :class:`~twisted.internet.ssl.CertificateOptions`. A reload
    builds new options from the files and swaps them in one assignment, so
    handshakes already under way and open connections keep the context they
    started with.

    Args:
        options: The settings; the files are read now.
        serves_http: Whether the server serves HTTP pages on its ports (for
            the ALPN protocols, :meth:`TLSOptions.protocols`).

    Raises:
        ConfigError: as :meth:`TLSOptions.load`.
    """

    log = Logger()

    def __init__(self, options: TLSOptions, serves_http: bool | None = None) -> None:
        if not isinstance(options, TLSOptions):
            raise ConfigError(
                f"tls takes a wsplugin.TLSOptions, not {type(options).__name__}"
            )
        self.options = options
        self.serves_http = serves_http
        self.alpn = options.protocols(serves_http)
        self._current = options.load(serves_http)
        self.certificate = _leaf(self._current)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A new server-side TLS connection from the current settings."""
        return self._current.serverConnectionForTLS(tlsProtocol)

    def reload(self) -> PeerCertificate:
        """Read the files again and use them for new connections.

        Returns:
            A description of the server certificate now in use.

        Raises:
            ConfigError: the files could not be used; the previous
                certificate stays in use (and this is logged).
        """
        try:
            fresh = self.options.load(self.serves_http)
        except ConfigError as e:
            self.log.error(
                "TLS reload failed, keeping the current certificate "
                "({fingerprint}): {error}",
                fingerprint=self.certificate.fingerprint,
                error=str(e),
            )
            raise
        self._current = fresh
        self.certificate = _leaf(fresh)
        self.log.info(
            "TLS certificate reloaded: {subject}, SHA-256 {fingerprint}, "
            "valid until {not_after}",
            subject=self.certificate.subject,
            fingerprint=self.certificate.fingerprint,
            not_after=self.certificate.not_after.isoformat(),
        )
        return self.certificate


def _leaf(options: CertificateOptions) -> PeerCertificate:
    cert = options.certificate
    if isinstance(cert, crypto.X509):
        cert = cert.to_cryptography()
    return PeerCertificate.from_cryptography(cert)
