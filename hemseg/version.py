"""The hemseg version: one place, read by the package, the command line, slice folders and pyproject.toml."""

__version__ = "0.1.0"
