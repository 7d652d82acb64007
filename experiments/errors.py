"""The experiment file's error (its own module, so that config and stacks both raise it
without importing each other both ways)."""

from __future__ import annotations

from testbed.errors import FieldError


class ExperimentError(FieldError):
    """An experiment file (or a --set override) is wrong; names the file and the field."""
