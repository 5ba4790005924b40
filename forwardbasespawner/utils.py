"""Helpers that subclasses of the original package import from here."""

from .api.auth import check_custom_scopes

__all__ = ["check_custom_scopes"]
