"""Exceptions raised by cascade."""

from __future__ import annotations


class CascadeError(Exception):
    """Base class of cascade's own errors."""


class BundleError(CascadeError):
    """A bundle folder is missing, incomplete, corrupt, tampered with or of another format version."""
