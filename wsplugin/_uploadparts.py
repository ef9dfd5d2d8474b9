"""What an upload is made of (:class:`FilePart`, :class:`SavedFile`,
:class:`Upload`) and the rules for the names files are saved under
(:func:`safe_filename`, :func:`check_name`). Public through
:mod:`wsplugin.uploads`."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FilePart", "SavedFile", "Upload", "check_name", "safe_filename"]


@dataclass(frozen=True)
class FilePart:
    """A file part whose content is about to arrive (``before_save_file``).

    Attributes:
        field: The form field's name.
        filename: The client's file name exactly as sent (``""`` when the
            form's file input was left empty). Untrusted: it may hold ``../``,
            an absolute path, a NUL byte; never use it as a path, see
            :func:`safe_filename`.
        content_type: The part's ``Content-Type`` as sent, or None. Also
            untrusted: check the content itself when it matters.
        headers: All the part's headers, names lower-cased.
    """

    field: str
    filename: str
    content_type: str | None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SavedFile:
    """A file saved under its final name (``after_save_file``, :class:`Upload`).

    Attributes:
        field: The form field's name.
        filename: The client's file name, as sent (metadata only).
        name: The name it is saved under, in the upload directory.
        path: The full path of the saved file.
        size: Its size in bytes.
        content_type: The part's ``Content-Type`` as sent, or None.
    """

    field: str
    filename: str
    name: str
    path: str
    size: int
    content_type: str | None


@dataclass
class Upload:
    """What one request uploaded (``on_complete``).

    Attributes:
        files: The saved files, in the order of the form.
        fields: The non-file fields: name -> values, in order.
        skipped: File parts not saved (``before_save_file`` returned False,
            or an empty file input).
    """

    files: list[SavedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[FilePart] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The default JSON answer: the files and the field names (field
        values are not echoed back)."""
        return {
            "files": [
                {
                    "field": f.field,
                    "filename": f.filename,
                    "name": f.name,
                    "size": f.size,
                    "content_type": f.content_type,
                }
                for f in self.files
            ],
            "fields": list(self.fields),
            "skipped": [
                {"field": p.field, "filename": p.filename} for p in self.skipped
            ],
        }


def safe_filename(name: str | None, max_bytes: int = 255) -> str | None:
    """A file name made from a client's ``name`` that is safe to save under,
    or None when nothing usable is left.

    The last path component is kept (after ``/`` or ``\\``: old browsers
    send ``C:\\Users\\me\\file.txt``), Unicode is normalized (NFC), control
    and format characters are removed (NUL, newlines, and the right-to-left
    override that makes ``exe.txt`` look like ``txt.exe``), leading dots and
    surrounding spaces are stripped (no hidden files, no ``..``), and the
    name is cut to ``max_bytes`` bytes of UTF-8, keeping its extension.

    ``safe_filename("../../etc/passwd") == "passwd"``,
    ``safe_filename("..") is None``.
    """
    if not name:
        return None
    text = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
    text = text.strip().lstrip(".").strip()
    if not text:
        return None
    encoded = text.encode("utf-8")
    if len(encoded) > max_bytes:
        stem, dot, ext = text.rpartition(".")
        if not dot or len(ext.encode()) > 16 or not stem:
            stem, ext, dot = text, "", ""
        room = max_bytes - len((dot + ext).encode())
        stem = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip()
        text = stem + dot + ext
    return text or None


def check_name(name: str) -> str:
    """``name`` if it is one plain path component; ValueError otherwise."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "not a non-empty string"
    elif name.startswith("."):
        problem = "starts with a dot"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif any(unicodedata.category(c) == "Cc" for c in name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", errors="surrogatepass")) > 255:
        problem = "is over 255 bytes"
    if problem is not None:
        raise ValueError(f"unsafe file name {name!r}: it {problem}")
    return name
