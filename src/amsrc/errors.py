"""Errors the library raises for bad input. The CLI prints them and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class AmsrcError(Exception):
    """Base class: a problem the user can fix (bad input, bad setting)."""


class DataError(AmsrcError):
    """Input data is missing, malformed or inconsistent. The message names the file."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        self.reason = message  # the message without the path
        super().__init__(f"{path}: {message}" if path is not None else message)


class ConfigError(AmsrcError):
    """A setting is unknown or out of range."""


class WorkerError(AmsrcError):
    """A worker process died (killed, out of memory): not the input's fault, and a rerun resumes."""
