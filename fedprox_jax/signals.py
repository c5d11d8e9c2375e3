"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM (a scheduler's notice) stop it between
two steps; records and a checkpoint being written are finished first, and a request that a
library swallowed (JAX's callbacks ignore exceptions) is acted on at the next round."""
import contextlib
import signal
import threading

_requested: list[int] = []
_deferring = [False]
_holding = [False]  # A multi-process run: stops are acted on between rounds only, all together.


def _handler(signum, frame) -> None:
  del frame
  _requested.append(signum)
  if not _deferring[0]:
    raise KeyboardInterrupt


def install() -> None:
  """Routes SIGINT and SIGTERM here (the command lines do; a notebook keeps Python's own)."""
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, _handler)


def record() -> None:
  """Records SIGINT and SIGTERM without raising (while libraries load: an exception raised in
  their import can be lost or crash the process); install() then acts on them."""
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda signum, frame: _requested.append(signum))


def hold() -> None:
  """From now on a stop is only recorded (asked() says so); the caller acts on it."""
  _holding[0] = _deferring[0] = True


def asked() -> bool:
  return bool(_requested)


def stopped_by() -> int:
  """The signal that asked for the stop (SIGINT if none was recorded)."""
  return _requested[0] if _requested else signal.SIGINT


def check() -> None:
  """Raises KeyboardInterrupt if a stop was asked for and not acted on."""
  if _requested:
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred():
  """Holds a stop asked for inside the block until its end (only in the main thread, where
  handlers run)."""
  if (threading.current_thread() is not threading.main_thread() or _deferring[0] or _holding[0]):
    yield
    return
  _deferring[0] = True
  try:
    yield
  finally:
    _deferring[0] = False
  check()
