"""The failures a user can cause or fix; each message says what is wrong and what to do.

The command lines print these as one line and exit non-zero; anything else is a bug and keeps its
traceback.
"""


class ConfigError(ValueError):
  """An invalid configuration field, or a workdir that does not fit the config."""


class DataError(RuntimeError):
  """The data cannot be had, or are damaged."""


class NonFiniteError(RuntimeError):
  """Training diverged; the message names the round."""


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written, or was written by a newer format."""


class LogError(RuntimeError):
  """metrics.jsonl does not match the checkpoint it resumes from."""


class WriteError(RuntimeError):
  """A run's file could not be written (disk full, permissions)."""


class Interrupted(Exception):
  """The user stopped the run (Ctrl-C); the message says where it stands and how to go on."""


USER_ERRORS = (ConfigError, DataError, NonFiniteError, CheckpointError, LogError, WriteError)
