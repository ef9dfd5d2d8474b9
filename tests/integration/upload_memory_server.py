"""The server of the 1 GiB upload memory test (tests/integration/test_uploads.py).

``POST /upload`` is an UploadResource saving to DIRECTORY (2 GiB per
request); ``GET /rss`` answers this process's resident memory now
(``VmRSS``) and at its highest so far (``VmHWM``), in bytes, read from
/proc/self/status.

Run:  python tests/integration/upload_memory_server.py ENDPOINT DIRECTORY
"""

import json
import sys

from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.config import MiB
from wsplugin.uploads import UploadResource


def memory() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * 1024
    return {"rss": found["VmRSS"], "peak": found["VmHWM"]}


class Rss(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(memory()).encode()


root = Resource()
root.putChild(b"rss", Rss())
root.putChild(
    b"upload",
    UploadResource(sys.argv[2], max_request_body=2048 * MiB, request_body_timeout=600),
)
server = WebSocketServer(None, endpoints=[sys.argv[1]], http=root)
sys.exit(server.run())
