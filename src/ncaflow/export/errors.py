"""The one error type of the export package (a leaf: imports nothing of the project)."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(ValueError):
    """The model cannot be exported as asked; the message says why and what to do."""
