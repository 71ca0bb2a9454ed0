"""Errors a user can fix, kept apart from bugs.

A :class:`UserError` is a mistake in what the user gave the pipeline (params, data
contract, data, a file or a server they named): the stage runner prints it as one line
and exits with code 2. Anything else is a bug in the code and keeps its traceback
(exit code 1).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave the pipeline is wrong; the message says what and where."""


class ParamsError(UserError, ValueError):
    """A parameter file does not match the expected schema or constraints."""


class ContractError(UserError, ValueError):
    """The data contract file itself is invalid (not the data it describes)."""


class DataError(UserError, ValueError):
    """The data breaks the contract or cannot be used as configured."""


class ModelFileError(UserError, ValueError):
    """A model file is unreadable, corrupt, untrusted or does not match its metadata."""


class StorageError(UserError, OSError):
    """A file cannot be read or written: disk full, no permission, a symlink loop ..."""
