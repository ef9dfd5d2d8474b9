"""HTTP/2 pages and wss:// WebSockets on one TLS port.

Browsers negotiate HTTP/2 (ALPN ``h2``) for the chat page and its files,
and open the WebSocket over HTTP/1.1 on the same port: the server offers
both, ``h2`` first, because it serves pages and the ``h2`` package is
installed (``pip install 'wsplugin[http2]'``). Every bound of the HTTP/1.1
side (body size and time, ``before_request``, guards) holds per HTTP/2
stream.

Without CERT and KEY, a self-signed certificate for localhost is made in a
temporary directory (the browser will warn about it; curl needs ``-k``).

Run:  python examples/http2_server.py [ENDPOINT] [CERT KEY]
      (default tcp:8443)
Try:  curl -k --http2 -s -o /dev/null -w '%{http_version}\\n' https://localhost:8443/
      then open https://localhost:8443/ in two browser tabs and chat
"""

import datetime
import os
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wsplugin import TLSOptions, WebSocketServer
from wsplugin.apps.chat import Chat


def self_signed():
    """A throwaway certificate and key for localhost (files in a temp dir)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory = tempfile.mkdtemp(prefix="wsplugin-http2-")
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8443"
cert, key = sys.argv[2:4] if len(sys.argv) > 3 else self_signed()
tls = TLSOptions(certificate=cert, key=key)  # ALPN: h2, http/1.1 (see the docstring)
chat = Chat()
server = WebSocketServer(chat, endpoints=[endpoint], http=chat.resource(), tls=tls)
print(f"offering {', '.join(server.tls.alpn)} on {endpoint}", flush=True)
sys.exit(server.run())
