"""Library chatter that tells a user nothing, kept out of the log (absl's --verbosity=1 brings it
back): orbax's note of every file it writes, TFDS's notes and progress bars, JAX's search for a
TPU and its notes on joining a multi-process run, matplotlib's font cache, and asyncio's and
orbax's tracebacks of a checkpoint save whose failure fedprox_jax reports itself in one line.
"""
import logging
import os

from absl import logging as absl_logging

# (logger name or source path fragment, level below which its records are dropped, messages
# dropped at any level).
_QUIETED = (
    ('/orbax/', logging.WARNING, ('raised an exception',)),
    ('/tensorflow_datasets/', logging.WARNING, ()),
    ('/jax/_src/xla_bridge.py', logging.WARNING, ()),
    ('/jax/_src/distributed.py', logging.WARNING, ()),
    ('asyncio', logging.NOTSET, ('exception was never retrieved',)),
    ('matplotlib.font_manager', logging.WARNING, ()),  # 'generated new fontManager', once.
)


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


def install() -> None:
  """Quiets the libraries (idempotent). TensorFlow reads MNIST's files only: its C++ notice that
  oneDNN optimisations are on, printed at import, is kept away too."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  for name in ('absl', 'asyncio', 'jax._src.xla_bridge', 'jax._src.distributed',
               'matplotlib.font_manager'):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)
