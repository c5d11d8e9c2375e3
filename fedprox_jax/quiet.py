"""Library chatter that tells a user nothing, kept out of the log (absl's --verbosity=1 brings it
back): orbax's note of every file it writes, TFDS's notes and progress bars, JAX's notes (its
search for a TPU, its notes on joining a multi-process run), matplotlib's font cache, and asyncio's
and orbax's tracebacks of a checkpoint save whose failure fedprox_jax reports itself in one line.

The command lines install this for their whole process (install); a library call (a notebook's
train_and_evaluate) holds it only while it runs, and then shows its progress too (library_call).
"""
import contextlib
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

# (logger name or source path fragment, level below which its records are dropped, messages
# dropped at any level). orbax and TFDS log through absl's logger: only their files tell them.
_QUIETED = (
    ('/orbax/', logging.WARNING, ('raised an exception',)),
    ('/tensorflow_datasets/', logging.WARNING, ()),
    ('asyncio', logging.NOTSET, ('exception was never retrieved',)),
    ('matplotlib.font_manager', logging.WARNING, ()),  # 'generated new fontManager', once.
)
_FILTERED = ('absl', 'asyncio', 'matplotlib.font_manager')
# JAX's loggers are all below the public 'jax' logger: its level holds for every one of them.
_JAX = 'jax'
_ENVIRONMENT = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}


class _LibraryFilter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    if absl_logging.get_verbosity() >= 1:  # --verbosity=1 (or -v 1): everything.
      return True
    for source, level, messages in _QUIETED:
      if source in record.pathname or record.name == source:
        message = record.getMessage()
        if record.levelno < level or any(m in message for m in messages):
          return False
        if record.exc_info or '\n' in message:  # One line, even for a library's warning.
          record.msg, record.args = ' '.join(message.split())[:300], ()
          record.exc_info = record.exc_text = None
    return True


_FILTER = _LibraryFilter()
_DEPTH = [0]  # library_call()s in progress: the outermost one sets up and restores.


def install() -> None:
  """Quiets the libraries for the rest of the process (idempotent). TensorFlow reads MNIST's files
  only: its C++ notice that oneDNN optimisations are on, printed at import, is kept away too."""
  for name, value in _ENVIRONMENT.items():
    os.environ.setdefault(name, value)
  for name in _FILTERED:
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
  if absl_logging.get_verbosity() < 1 and logging.getLogger(_JAX).level == logging.NOTSET:
    logging.getLogger(_JAX).setLevel(logging.WARNING)


@contextlib.contextmanager
def library_call():
  """Quiets the libraries while a library call runs and shows its progress lines (INFO) when
  no command line has set up logging (flags unparsed: a notebook, a script); everything is as it
  was afterwards."""
  if _DEPTH[0]:
    yield
    return
  environment = {name: os.environ.get(name) for name in _ENVIRONMENT}
  loggers = [logging.getLogger(name) for name in _FILTERED]
  filtered = [logger for logger in loggers if _FILTER not in logger.filters]
  jax_level = logging.getLogger(_JAX).level
  root = logging.getLogger()
  root_level, progress = root.level, None
  if not flags.FLAGS.is_parsed():  # The project logs its progress at INFO, to the root logger.
    if root.getEffectiveLevel() > logging.INFO:
      root.setLevel(logging.INFO)
    if not root.handlers:
      progress = logging.StreamHandler(sys.stderr)
      progress.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
      root.addHandler(progress)
  install()
  _DEPTH[0] += 1
  try:
    yield
  finally:
    _DEPTH[0] -= 1
    for logger in filtered:
      logger.removeFilter(_FILTER)
    logging.getLogger(_JAX).setLevel(jax_level)
    for name, value in environment.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
    root.setLevel(root_level)
    if progress is not None:
      root.removeHandler(progress)
