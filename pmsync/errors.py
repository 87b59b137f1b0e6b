"""Errors that reach the user as one clear sentence (what, where, what to do), never a traceback."""
from __future__ import annotations


class PmsyncError(Exception):
    """A failure the user can act on. The message is shown as-is, so it must be one complete sentence."""

    exit_code = 1


class ConfigError(PmsyncError):
    """The configuration file is wrong: the message names the file, the key and the fix."""

    exit_code = 2


class ConnectionFailed(PmsyncError):
    """A tool could not be reached or refused the credentials."""

    exit_code = 3
