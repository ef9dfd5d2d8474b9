"""Packaging for wsplugin.

The ``twisted/plugins`` dropin is shipped as part of the ``twisted.plugins``
namespace (no ``__init__.py`` there), so ``twistd ws`` is found after a plain
``pip install .``. The chat demo's page ships as package data.
"""

import os
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent


def _extensions() -> list[Extension]:
    """The compiled frame codec (docs/codec.md), optional like websockets'
    speedups: without a C compiler (or Python headers) the build warns and
    installs the pure-Python codec. WSPLUGIN_BUILD_EXTENSION=yes makes a
    failed build an error (CI), =no skips it."""
    mode = os.environ.get("WSPLUGIN_BUILD_EXTENSION", "").strip().lower()
    if mode == "no":
        return []
    return [
        Extension(
            "wsplugin._speedups",
            sources=["wsplugin/_speedups.c"],
            optional=mode != "yes",
        )
    ]


def _version() -> str:
    for line in (HERE / "wsplugin" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("wsplugin/_version.py has no __version__")


DOCS = ["sphinx>=9.0,<10", "furo>=2025.7", "myst-parser>=5.0,<6"]


setup(
    name="wsplugin",
    version=_version(),
    description="A WebSocket server component suite for Twisted, built on Autobahn",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # wsplugin/apps/static holds data only (the chat page): it is listed as
    # a package of its own, as setuptools wants for a directory it could
    # import, so that building does not warn about it
    packages=[
        *find_packages(exclude=["tests", "tests.*"]),
        "wsplugin.apps.static",
        "twisted.plugins",
    ],
    package_data={"wsplugin": ["py.typed"], "wsplugin.apps.static": ["*.html"]},
    ext_modules=_extensions(),
    install_requires=[
        "twisted[tls]>=23.10",
        "autobahn>=24.4",
        "service-identity>=21.1",
        "pyopenssl>=23.2",
        "bcrypt>=4.0",  # htpasswd -B password files (wsplugin.auth)
        'tomli>=1.1; python_version < "3.11"',  # twistd ws --config (tomllib)
    ],
    extras_require={
        # the Redis backplane (wsplugin.backplane.RedisBackplane); hiredis
        # is txredisapi's fast reply parser (about 10x faster recovery)
        "redis": ["txredisapi>=1.6", "hiredis>=2.0"],
        # Prometheus metrics (wsplugin.metrics, twistd ws --metrics)
        "metrics": ["prometheus_client>=0.17"],
        # HTTP/2 for the same-port site over TLS (Twisted's, with h2)
        "http2": ["twisted[http2]>=23.10"],
        # the documentation site (make docs): Sphinx, its Furo theme, and
        # MyST for the Markdown pages. A build with -W fails on any warning,
        # and new major versions add warnings: the majors are the ones the
        # site is built with.
        "docs": DOCS,
        # Twisted's asyncio reactor on uvloop (wsplugin.reactors,
        # twistd --reactor=uvloop; docs/performance.md, "The reactor")
        "uvloop": ["uvloop>=0.17"],
        "test": [
            *DOCS,  # tests/integration/test_docsite.py builds the site
            "trustme>=1.1",
            "websockets>=12",
            "hypothesis>=6.80",
            "ruff>=0.5",
            "kosoku>=0.1",
            "txredisapi>=1.6",  # the Redis backplane's tests
            "prometheus_client>=0.17",  # the metrics' tests
            "twisted[http2]>=23.10",  # HTTP/2 tests (and their h2 client)
            "uvloop>=0.17",  # wsplugin.reactors' tests
            "hiredis>=2.0",
        ],
    },
    entry_points={"console_scripts": ["wsplugin-client = wsplugin.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
