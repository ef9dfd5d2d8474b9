"""Sphinx configuration of wsplugin's documentation site.

``make docs`` builds it into build/docs/html with warnings as errors and
nitpicky cross-references (``sphinx-build -W --keep-going -n``); the
``docs`` extra installs Sphinx, Furo and MyST. The pages stay the Markdown
files of docs/, which GitHub renders too; ``_ext/wsdocs.py`` adds what only
the site needs (navigation, included example files, the API pages).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

from wsplugin import __version__  # noqa: E402  (the checkout's, not an install's)

project = "wsplugin"
author = "the wsplugin authors"
copyright = "wsplugin authors, MIT licence"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "wsdocs",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# Only pages are sources: the dashboard JSON, profiles and pictures are
# files the pages link or show, and _ext is the extension above.
exclude_patterns = ["_ext", "dashboards", "profiles"]

# MyST: GitHub's heading anchors, so the pages' [text](page.md#anchor)
# links work on the site as they do on GitHub.
myst_heading_anchors = 6

# autodoc + napoleon (the docstrings use Google-style sections)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become :ivar: fields, not attribute entries that
# would describe a second time the attributes autodoc documents
napoleon_use_ivar = True

# Nitpicky (-n): every reference to a wsplugin object must resolve. These
# may stay plain text, each for a reason:
nitpick_ignore_regex = [
    # Other projects' objects, and the standard library's: no intersphinx
    # inventory is reachable at build time (the build needs no network).
    (
        r"py:.*",
        r"(twisted|autobahn|zope|txaio|OpenSSL|cryptography|txredisapi"
        r"|prometheus_client|service_identity|hyperlink)\..*",
    ),
    (
        r"py:.*",
        r"(collections\.abc|os|pathlib|datetime|argparse|ssl|socket|asyncio"
        r"|enum|dataclasses|types|typing_extensions|email|http|json|io|re)\..*",
    ),
    # Private helpers that public attributes are annotated with: not API.
    (r"py:.*", r"wsplugin(\.\w+)*\._\w+(\..*)?"),
]

html_theme = "furo"
html_title = f"wsplugin {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
