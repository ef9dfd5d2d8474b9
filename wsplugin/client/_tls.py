"""TLS for ``wss://`` URLs: whom to trust, and why a handshake failed.

:func:`tls_creator` turns a :class:`ClientConfig`'s ``ca_file=``,
``trust=`` or ``tls=`` into the connection creator Twisted's
``wrapClientTLS`` takes: TLS 1.2 or newer, the certificate and host name
verified (``optionsForClientTLS``). :func:`tls_reason` finds the few words
that say why a TLS connection ended, for :class:`~wsplugin.errors.TLSFailed`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from wsplugin.client._config import ClientConfig
from wsplugin.client._url import URL
from wsplugin.errors import ConfigError

__all__ = ["tls_creator", "tls_reason"]


def _trust_root(trust: Any) -> Any:
    from twisted.internet import ssl

    if hasattr(trust, "cert_pem") and hasattr(trust.cert_pem, "bytes"):
        trust = trust.cert_pem.bytes()  # a trustme.CA
    if isinstance(trust, str):
        trust = trust.encode("ascii")
    if isinstance(trust, bytes):
        return ssl.trustRootFromCertificates(_pem_certificates(trust, "trust="))
    if isinstance(trust, ssl.Certificate):
        return ssl.trustRootFromCertificates([trust])
    # the interface is documented, though defined in a private module
    from twisted.internet._sslverify import IOpenSSLTrustRoot

    if IOpenSSLTrustRoot.providedBy(trust):
        return trust
    raise ConfigError(
        "trust= takes PEM bytes, a Certificate, an IOpenSSLTrustRoot or a "
        f"trustme.CA, not {type(trust).__name__}"
    )


def _pem_certificates(pem: bytes, where: str) -> list[Any]:
    from twisted.internet import ssl

    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL
    )
    if not blocks:
        raise ConfigError(f"{where} holds no PEM certificate")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


def tls_creator(url: URL, config: ClientConfig) -> Any:
    """The TLS connection creator for a ``wss://`` URL.

    ``config.tls`` as given; otherwise ``optionsForClientTLS`` for the URL's
    host, trusting ``ca_file`` or ``trust`` instead of the system's CAs when
    one is set, with TLS 1.2 as the lowest version.

    Raises:
        ConfigError: ``ca_file`` cannot be read or holds no certificate, or
            ``trust`` is of a kind it cannot use.
    """
    if config.tls is not None:
        return config.tls
    from twisted.internet import ssl

    root = None
    if config.ca_file is not None:
        try:
            pem = Path(config.ca_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read ca_file {config.ca_file}: {e}") from None
        root = ssl.trustRootFromCertificates(
            _pem_certificates(pem, f"ca_file {config.ca_file}")
        )
    elif config.trust is not None:
        root = _trust_root(config.trust)
    return ssl.optionsForClientTLS(
        url.host,
        trustRoot=root,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


def tls_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, or None if ``exc`` is no TLS error."""
    module = type(exc).__module__ or ""
    if module.startswith("service_identity"):
        return "the certificate is not valid for this host name"
    if module.startswith("OpenSSL"):
        try:
            reasons = [entry[2] for entry in exc.args[0] if entry[2]]
        except (IndexError, TypeError):
            reasons = []
        if reasons:
            return "; ".join(reasons)
        return str(exc) or type(exc).__name__
    return None
