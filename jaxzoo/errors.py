"""The mistakes a user can fix, as exception types.

Every launcher runs through `jaxzoo.train.cli.run`, which prints a `UserError` as one line
(`error: <message>`) and exits with status 2; any other exception is a bug and keeps its
traceback. Messages name the bad value and what is allowed. Each type also derives from the
built-in exception a library caller would expect (ValueError, FileNotFoundError, ...), so
code that imports jaxzoo's functions can catch them the usual way.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (config, data, workdir, files): reported in one line."""


class ConfigError(UserError, ValueError):
    """A config file, variant, key or value is invalid."""


class DataError(UserError, ValueError):
    """A dataset or weight file is malformed; the message names the file, entry and key."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist (or a run has not written it yet)."""


class WorkdirError(UserError, RuntimeError):
    """The workdir cannot be used: another run holds it, or it holds a different run."""
