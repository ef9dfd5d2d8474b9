"""Tests for ``wsplugin.client._tls``: trust for wss:// and TLS failure reasons."""

from __future__ import annotations

from pathlib import Path

import trustme
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.client import ClientConfig, parse_url
from wsplugin.client._tls import tls_creator, tls_reason
from wsplugin.errors import ConfigError


class TLSCreatorTests(SynchronousTestCase):
    """``tls_creator`` builds the connection creator from the options."""

    def test_tls_creator(self) -> None:
        """``trust=`` takes a trustme CA or PEM; ``ca_file=`` a PEM file; a
        file without certificates is an error."""
        ca = trustme.CA()
        url = parse_url("wss://localhost:8443/")
        for trust in (ca, ca.cert_pem.bytes(), ca.cert_pem.bytes().decode()):
            self.assertIsNotNone(tls_creator(url, ClientConfig(trust=trust)))
        path = Path(self.mktemp())
        ca.cert_pem.write_to_path(str(path))
        self.assertIsNotNone(tls_creator(url, ClientConfig(ca_file=path)))
        path.write_text("nothing here")
        self.assertRaises(ConfigError, tls_creator, url, ClientConfig(ca_file=path))
        self.assertRaises(ConfigError, tls_creator, url, ClientConfig(trust=42))
        missing = ClientConfig(ca_file=path.with_name("missing.pem"))
        with self.assertRaises(ConfigError) as caught:
            tls_creator(url, missing)
        self.assertIn("cannot read ca_file", str(caught.exception))
        creator = object()
        self.assertIs(tls_creator(url, ClientConfig(tls=creator)), creator)


class TLSReasonTests(SynchronousTestCase):
    """``tls_reason`` finds the words that say why TLS failed."""

    def test_reasons(self) -> None:
        """OpenSSL errors give their reason strings, service_identity errors
        a sentence about the host name; other errors are no TLS error."""
        from service_identity import VerificationError

        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(tls_reason(error), "certificate verify failed")
        self.assertEqual(tls_reason(SSL.Error()), "Error")
        self.assertEqual(
            tls_reason(VerificationError([])),
            "the certificate is not valid for this host name",
        )
        self.assertIsNone(tls_reason(ConnectionDone()))
