"""The package version, importable without importing the package (hub writes it into saved models)."""

__version__ = "0.1.0"
