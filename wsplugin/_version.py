"""The wsplugin version, read by setup.py and re-exported by the package."""

__version__ = "0.1.0"
