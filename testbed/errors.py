"""The one error for files a user writes (topologies, experiments) and the overrides of them."""

from __future__ import annotations

from pathlib import Path


class FieldError(ValueError):
    """A file (or a --set override of it) is wrong; the message names the file and the field."""

    def __init__(self, source: str | Path, field_name: str, problem: str):
        self.source = str(source)
        self.field = field_name
        self.problem = problem
        super().__init__(f"{source}: {field_name}: {problem}")
