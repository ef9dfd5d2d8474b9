"""wsplugin._uploadparts: what an upload is made of, and the rules for the
names files are saved under (client names never become paths)."""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from wsplugin._uploadparts import FilePart, SavedFile, Upload, check_name, safe_filename


class SafeFilenameTests(SynchronousTestCase):
    """A client's file name made safe to save under."""

    def test_safe_filename(self) -> None:
        """safe_filename keeps the last component, drops control and format
        characters and leading dots, and returns None when nothing is left."""
        cases = {
            "../../../../etc/passwd": "passwd",
            "/etc/passwd": "passwd",
            "..": None,
            ".": None,
            "": None,
            None: None,
            "...": None,
            ".htaccess": "htaccess",
            "..\\..\\windows\\win.ini": "win.ini",
            "C:\\Users\\me\\report.pdf": "report.pdf",
            "a\x00b.txt": "ab.txt",
            "new\r\nline.txt": "newline.txt",
            "\u202etxt.exe": "txt.exe",
            "  spaced .txt ": "spaced .txt",
            "e\u0301.txt": "\u00e9.txt",  # NFC
            "dir/": None,
        }
        for given, expected in cases.items():
            self.assertEqual(safe_filename(given), expected, repr(given))
        long = "é" * 200 + ".tar.gz"
        cut = safe_filename(long)
        assert cut is not None
        self.assertTrue(cut.endswith(".gz"))
        self.assertLessEqual(len(cut.encode()), 255)

    def test_cut_keeps_the_extension(self) -> None:
        """A long name is cut to max_bytes of UTF-8 with its extension
        kept, never in the middle of a character."""
        self.assertEqual(safe_filename("abcdefghij.txt", max_bytes=8), "abcd.txt")
        cut = safe_filename("é" * 10 + ".txt", max_bytes=9)
        self.assertEqual(cut, "éé.txt")

    def test_cut_without_a_usable_extension(self) -> None:
        """No extension, an over-long one (> 16 bytes) or a name that is
        all extension: the name is simply cut."""
        self.assertEqual(safe_filename("abcdefghij", max_bytes=4), "abcd")
        ext = "x" * 20
        self.assertEqual(safe_filename("a." + ext, max_bytes=5), "a.xxx")


class CheckNameTests(SynchronousTestCase):
    """A name to save under must be one plain path component."""

    def test_plain_names_kept(self) -> None:
        """Ordinary names come back unchanged, non-ASCII ones included."""
        for name in ("a.txt", "report 2024.pdf", "é.txt", "x" * 255):
            self.assertEqual(check_name(name), name)

    def test_unsafe_names_refused(self) -> None:
        """Each unsafe name is a ValueError saying why."""
        cases = {
            "": "not a non-empty string",
            ".hidden": "starts with a dot",
            "..": "starts with a dot",
            "a/b": "holds a path separator",
            "a\\b": "holds a path separator",
            "a\x00b": "holds a control character",
            "a\nb": "holds a control character",
            "é" * 128: "is over 255 bytes",
        }
        for name, why in cases.items():
            e = self.assertRaises(ValueError, check_name, name)
            self.assertIn(why, str(e), repr(name))
            self.assertIn("unsafe file name", str(e))
        e = self.assertRaises(ValueError, check_name, 42)
        self.assertIn("not a non-empty string", str(e))


class UploadTests(SynchronousTestCase):
    """The parts and the summary answered by default."""

    def test_summary(self) -> None:
        """The files with their saved names and sizes, the field names
        (never their values) and the skipped parts."""
        upload = Upload()
        upload.files.append(
            SavedFile("doc", "../a.txt", "a1", "/up/a1", 3, "text/plain")
        )
        upload.fields["secret"] = ["hunter2"]
        upload.skipped.append(FilePart("empty", "", None))
        self.assertEqual(
            upload.summary(),
            {
                "files": [
                    {
                        "field": "doc",
                        "filename": "../a.txt",
                        "name": "a1",
                        "size": 3,
                        "content_type": "text/plain",
                    }
                ],
                "fields": ["secret"],
                "skipped": [{"field": "empty", "filename": ""}],
            },
        )
        self.assertNotIn("hunter2", repr(upload.summary()))

    def test_empty_and_separate(self) -> None:
        """A new Upload is empty, and two never share their lists."""
        first, second = Upload(), Upload()
        first.fields["a"] = ["1"]
        self.assertEqual(second.summary(), {"files": [], "fields": [], "skipped": []})

    def test_parts_frozen(self) -> None:
        """FilePart and SavedFile cannot be changed by a handler."""
        part = FilePart("f", "a.txt", None, (("content-type", "text/plain"),))
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, part, "filename", "b"
        )
        saved = SavedFile("f", "a.txt", "n", "/p/n", 1, None)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, saved, "path", "/x")
