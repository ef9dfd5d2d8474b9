"""Streamed file uploads next to a WebSocket route (sgc ``OnHTTPUpload*``).

``POST /upload`` takes a multipart form: files stream to DIRECTORY as they
arrive (up to 1 GiB each, 2 GiB a request; the server's own limit stays
1 MiB everywhere else), fields are read as they complete. Files keep a
sanitized form of the client's name (``../../notes.txt`` is saved as
``notes.txt``); a name that exists gets 409. Only ``.txt``, ``.csv`` and
``.jpg`` files are kept, others are skipped. Every saved file is announced
to the WebSocket clients of ``/ws``; ``GET /`` is a form to try it in a
browser.

Run:  python examples/upload_server.py [ENDPOINT] [DIRECTORY]
      (default tcp:8888 and a new temporary directory)
Try:  curl -F note=hello -F file=@notes.txt http://127.0.0.1:8888/upload
      python -m websockets ws://127.0.0.1:8888/ws    (to see the announcements)
"""

import sys
import tempfile

from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.config import MiB
from wsplugin.uploads import UploadRefused, UploadResource, safe_filename

FORM = b"""<!doctype html>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input name="note"> <input type="file" name="file" multiple>
  <button>Upload</button>
</form>
"""
KEPT = (".txt", ".csv", ".jpg")


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return FORM


class Uploads:
    """The upload events; each may also return a Deferred or a coroutine."""

    def before_upload(self, request):
        # the head is in, no body byte yet (OnHTTPUploadBeforeCreatePostStream)
        if request.getHeader(b"x-refuse"):
            raise UploadRefused(403, "refused on request")

    def before_save_file(self, request, part):
        # before the file is created (OnHTTPUploadBeforeSaveFile): a name,
        # None for a generated one, or False to skip the file
        name = safe_filename(part.filename)
        if name is None or not name.lower().endswith(KEPT):
            return False
        return name

    def on_field(self, request, name, value):
        # a non-file field (OnHTTPUploadReadInput)
        print(f"field {name}={value!r}", flush=True)

    def after_save_file(self, request, saved):
        # the file has its final name (OnHTTPUploadAfterSaveFile)
        print(f"saved {saved.name} ({saved.size} bytes)", flush=True)
        server.broadcast(f"new file: {saved.name} ({saved.size} bytes)")


class Announce:
    def on_open(self, conn):
        conn.send_text("you will hear about new uploads here")


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
directory = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="uploads-")
print(f"saving uploads in {directory}", flush=True)

root = Resource()
root.putChild(b"", Page())
root.putChild(
    b"upload",
    UploadResource(
        directory,
        Uploads(),
        max_request_body=2048 * MiB,
        max_file_size=1024 * MiB,
        request_body_timeout=3600,
    ),
)
server = WebSocketServer(None, endpoints=[endpoint], http=root)
server.register_handler("*", "/ws", Announce(), default_host=True)
sys.exit(server.run())
