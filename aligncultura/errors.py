"""The errors a user can act on. Each is printed as one line with exit code 2 by `jobkit.cli`."""

from __future__ import annotations


class JobError(RuntimeError):
    """A failure the user can act on: printed as one line, exit code 2."""


class InputError(ValueError):
    """A problem with an input as a whole: the message is one line naming file and key."""
