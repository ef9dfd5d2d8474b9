"""Packaging for wsplugin.

The ``twisted/plugins`` dropin is shipped as part of the ``twisted.plugins``
namespace (no ``__init__.py`` there), so ``twistd ws`` is found after a plain
``pip install .``.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _version() -> str:
    for line in (HERE / "wsplugin" / "_version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("wsplugin/_version.py has no __version__")


setup(
    name="wsplugin",
    version=_version(),
    description="A WebSocket server component suite for Twisted, built on Autobahn",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"wsplugin": ["py.typed", "apps/static/*"]},
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=23.10",
        "autobahn>=24.4",
        "service-identity>=21.1",
        "pyopenssl>=23.2",
        "bcrypt>=4.0",  # htpasswd -B password files (wsplugin.auth)
    ],
    extras_require={
        # the Redis backplane (wsplugin.backplane.RedisBackplane)
        "redis": ["txredisapi>=1.6"],
        "test": [
            "trustme>=1.1",
            "websockets>=12",
            "hypothesis>=6.80",
            "ruff>=0.5",
            "kosoku>=0.1",
            "txredisapi>=1.6",  # the Redis backplane's tests
        ],
    },
    entry_points={"console_scripts": ["wsplugin-client = wsplugin.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
