"""Several processes, one run (jax.distributed, JAX's multi-controller engine).

Every process runs the same program: it builds the same partition from the same seed, compiles the
same round program over the global mesh of all processes' devices (lanes sharded over them), and
evaluates the same models on its own first device. Process 0, the leader, alone touches the
workdir (lock, records, checkpoints) and hands the others what it restored; the others keep
nothing. The processes agree before each round whether to stop, so that a stop asked of any of
them (Ctrl-C, a scheduler's SIGTERM) ends them all after the same round.

Waits on another process (the leader's word on how a run begins, the agreement before each round)
go through the coordination service's key-value store, and last as long as the other process
needs (the leader may prepare the data for minutes): a fixed deadline holds for joining only
(compute.join_timeout_s). What ends a wait is a watch on the others: each process beats every
half second in the store, and one that stops beating for compute.heartbeat_timeout_s (stopped,
hung, its host lost), one that is gone (killed, crashed: at once on the same machine, where its
process id tells; on another, when its connection closes under a collective), or one that stopped
on an error of its own ends the wait (and, where the program waits inside a collective, the
process) with one line (`PeerLost`). A process that stops on its own error says so in the store
first; the others then leave the run in order, through JAX's shutdown, rather than wait for it.
JAX itself aborts a process whose coordinator is gone before Python hears of it: each process's
stderr passes through a small guard process that puts one line in place of that abort's dumps
(engine/stderr_guard.py). The watch on the others is engine/heartbeats.py's.
"""
import atexit
import contextlib
import os
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from fedprox_jax import signals
from fedprox_jax.engine import devices
from fedprox_jax.engine import heartbeats
from fedprox_jax.engine import stderr_guard
from fedprox_jax.engine.heartbeats import KEY
from fedprox_jax.engine.heartbeats import PeerLost
from fedprox_jax.errors import ConfigError

# What the leader tells the others before the rounds: go on (from round 0 or its checkpoint's),
# the run is already complete, or it stopped (its own message says why).
START, COMPLETE, FAILED = 0, 1, 2

_SLICE_MS = 500  # A wait in the store is cut in slices, between which the watch is read.
_CONFIRM_S = 3.0  # After a failed cross-process step: how long a peer's silence is looked for.


def count() -> int:
  return jax.process_count()


def is_leader() -> bool:
  return jax.process_index() == 0


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


_watch: list[heartbeats.Watch | None] = [None]

_ending_now = threading.Lock()


def end(lost: PeerLost, line: str | None = None) -> None:
  """Ends this process at once after another was lost, with `line` (by default 'error: ' and
  the cause) where this process speaks for the run: the leader, or any when the leader is the one
  lost. JAX's own exit would wait for the lost process at its shutdown barrier, then abort."""
  _ending_now.acquire()  # pylint: disable=consider-using-with  # Once: a second caller waits.
  watch = _watch[0]
  if watch is not None:
    watch.finish()
  if not lost.quiet and (jax.process_index() == 0 or lost.process in (0, None)):
    print(line or f'error: {lost}', file=sys.stderr)
  stderr_guard.flush()
  if stderr_guard.guarded:  # Its last lines out before this process is seen to end.
    with contextlib.suppress(Exception):
      os.close(2)
      stderr_guard.guarded[0].wait(timeout=2)
  os._exit(1)  # pylint: disable=protected-access


def lost(e: BaseException) -> PeerLost | None:
  """If `e` (raised by a cross-process step) means that another process is gone, how: its own
  error (said in the store), or, confirmed by its beats stopping within a few seconds, a closed
  connection; a step that timed out while all beat is a timeout. None: `e` is something else."""
  if isinstance(e, PeerLost):
    return e
  watch = _watch[0]
  if watch is None or not isinstance(e, (jax.errors.JaxRuntimeError, ValueError)):
    return None
  deadline = time.monotonic() + _CONFIRM_S
  while True:
    verdict = watch.verdict(silent_s=_CONFIRM_S - 0.5)
    if verdict is not None:
      if verdict.kind in (heartbeats.OWN_ERROR, heartbeats.GONE):
        return verdict
      return PeerLost(
          heartbeats.CLOSED, f'process {verdict.process} closed its connection: killed, crashed, '
          'or its host went down', verdict.process)
    if time.monotonic() > deadline:
      break
    time.sleep(0.1)
  text = str(e)
  if 'DEADLINE_EXCEEDED' in text or 'timed out' in text:
    first = ' '.join(text.split())[:200]
    return PeerLost(heartbeats.TIMEOUT,
                    f'a cross-process step timed out though every process is there: {first}')
  return None


def tell_stopped(reason: str) -> None:
  """This process stops on an error of its own (`reason`, one line): the others learn it from
  the store and leave the run in order instead of waiting for it."""
  watch = _watch[0]
  if watch is None:
    return
  watch.finish()
  with contextlib.suppress(Exception):
    watch.client.key_value_set(f'{KEY}/stopped/{watch.me}', reason[:500], allow_overwrite=True)


def _ending() -> None:
  """At exit (before JAX's own shutdown): this process's part is over; the others expect no
  more beats from it."""
  watch = _watch[0]
  if watch is None:
    return
  watch.finish()
  with contextlib.suppress(Exception):
    if not watch.left:
      watch.client.key_value_set(f'{KEY}/done/{watch.me}', '1', allow_overwrite=True)


def _get(key: str) -> str:
  """The value of `key` in the store, waited for as long as it takes; a lost process ends the
  wait (PeerLost)."""
  watch = _watch[0]
  with watch.lock:
    watch.waiting += 1
  try:
    while True:
      lost_one = watch.verdict()
      if lost_one is not None:
        raise lost_one
      tick = time.monotonic()
      try:
        return watch.client.blocking_key_value_get(key, _SLICE_MS)
      except jax.errors.JaxRuntimeError:  # Not there yet, or the store did not answer.
        time.sleep(max(0.0, _SLICE_MS / 1000 - (time.monotonic() - tick)))
  finally:
    with watch.lock:
      watch.waiting -= 1


_rounds = {}  # Agreements made so far, by name.


def _agree(name: str, value: int) -> list[int]:
  """Every process's `value`, once all have given theirs (a wait as long as it takes)."""
  watch = _watch[0]
  seq = _rounds[name] = _rounds.get(name, -1) + 1
  watch.client.key_value_set(f'{KEY}/{name}/{seq}/{watch.me}', str(value))
  values = [int(_get(f'{KEY}/{name}/{seq}/{j}')) for j in range(watch.n)]
  if seq:  # Everyone wrote this one, so read the last one: it can go.
    with contextlib.suppress(Exception):
      watch.client.key_value_delete(f'{KEY}/{name}/{seq - 1}/{watch.me}')
  return values


_pending = [True]  # Whether the others wait for the leader's word (a run's start, a chunk's).
_words = [0]  # The leader's words said (heard, by the others) so far.


def expect_announcement() -> None:
  """The leader: the others now wait for a word on how the next program begins."""
  _pending[0] = True


def announce(status: int, restored_round: int = -1) -> None:
  """The leader's word to the others on how the run (a sweep's chunk) begins; once each."""
  if count() > 1 and is_leader() and _pending[0]:
    _pending[0] = False
    _words[0] += 1
    _watch[0].client.key_value_set(f'{KEY}/word/{_words[0]}', f'{status},{restored_round}')


@contextlib.contextmanager
def telling_failure():
  """The leader's work: if it fails while the others wait for its word, they are told."""
  try:
    yield
  except BaseException:
    if jax.distributed.is_initialized() and _watch[0] is not None:
      with contextlib.suppress(Exception):
        announce(FAILED)
    raise


def hear() -> tuple[int, int]:
  """(status, restored round or -1), as the leader announced them: waited for as long as the
  leader takes (it may be preparing the data)."""
  _words[0] += 1
  status, restored_round = map(int, _get(f'{KEY}/word/{_words[0]}').split(','))
  if status == FAILED:
    raise ConfigError('process 0 stopped before the rounds began: its message says why')
  return status, restored_round


def share(tree):
  """The leader's arrays of `tree` in every process (the others pass arrays of the same shapes)."""
  if count() == 1:
    return tree
  _agree('share', 0)  # All there first: the collective's own setup allows 30 s only.
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def join(compute: devices.ComputeSettings) -> None:
  """Joins the run's processes (if compute.distributed) before JAX starts; with several,
  stops are then acted on between rounds only, all processes together, and the others are
  watched."""
  if compute.distributed:
    stderr_guard.guard_stderr(compute.process_id)
  devices.configure(compute)
  if count() > 1:
    signals.hold()
    if _watch[0] is None:
      _watch[0] = heartbeats.Watch(_client(),
                                   jax.process_index(),
                                   count(),
                                   float(compute.heartbeat_timeout_s),
                                   on_lost=end)
      _watch[0].start()
      atexit.register(_ending)  # Runs before JAX's shutdown (registered at its import).


def check_stop() -> None:
  """Raises KeyboardInterrupt in every process if a stop was asked of any (between rounds)."""
  if count() == 1:
    signals.check()
    return
  if any(_agree('stop', int(signals.asked()))):
    raise KeyboardInterrupt
