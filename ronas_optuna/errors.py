"""The project's own error types: the only ones the command line prints as one line.

Each names the file, argument or option at fault and what is wrong with it. They subclass
``ValueError`` (or ``RuntimeError``) as the errors they replace did, so ``except ValueError`` in a
user's code keeps working. Anything else raised inside the package is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave (a file, an argument, a study) cannot be used as it is."""


class SettingsError(UserError, ValueError):
    """An option or argument has a value the package cannot use."""


class DataError(UserError, ValueError):
    """A dataset, file or argument is invalid; the message names the file and the problem."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, corrupt, or belongs to another space/configuration."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file is missing, truncated or corrupt (not one of another configuration)."""


class StorageError(UserError, ValueError):
    """An Optuna storage URL, or the study it should hold, cannot be used."""


class RunFolderBusy(UserError, RuntimeError):
    """Another live process holds the run folder."""


class WriteError(UserError, OSError):
    """A file of the run could not be written (a full disk, a read-only or forbidden folder); the
    message names the folder, what was being written, and the free space."""
