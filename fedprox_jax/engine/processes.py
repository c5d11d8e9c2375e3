"""Several processes, one run (jax.distributed, JAX's multi-controller engine).

Every process runs the same program: it builds the same partition from the same seed, compiles the
same round program over the global mesh of all processes' devices (lanes sharded over them), and
evaluates the same models on its own first device. Process 0, the leader, alone touches the
workdir (lock, records, checkpoints) and hands the others what it restored; the others keep
nothing. The processes agree before each round whether to stop, so that a stop asked of any of
them (Ctrl-C, a scheduler's SIGTERM) ends them all after the same round.
"""
import contextlib

import jax
from jax.experimental import multihost_utils
import numpy as np

from fedprox_jax import signals
from fedprox_jax.engine import devices
from fedprox_jax.errors import ConfigError

# What the leader tells the others before the rounds: go on (from round 0 or its checkpoint's),
# the run is already complete, or it stopped (its own message says why).
START, COMPLETE, FAILED = 0, 1, 2


def count() -> int:
  return jax.process_count()


def is_leader() -> bool:
  return jax.process_index() == 0


_pending = [True]  # Whether the others wait for the leader's word (a run's start, a chunk's).


def expect_announcement() -> None:
  """The leader: the others now wait for a word on how the next program begins."""
  _pending[0] = True


def announce(status: int, restored_round: int = -1) -> None:
  """The leader's word to the others on how the run (a sweep's chunk) begins; once each."""
  if count() > 1 and is_leader() and _pending[0]:
    _pending[0] = False
    multihost_utils.broadcast_one_to_all(np.array([status, restored_round], np.int32))


@contextlib.contextmanager
def telling_failure():
  """The leader's work: if it fails while the others wait for its word, they are told."""
  try:
    yield
  except BaseException:
    if jax.distributed.is_initialized():
      announce(FAILED)
    raise


def hear() -> tuple[int, int]:
  """(status, restored round or -1), as the leader announced them."""
  status, restored_round = multihost_utils.broadcast_one_to_all(np.zeros(2, np.int32),
                                                                is_source=False)
  if status == FAILED:
    raise ConfigError('process 0 stopped before the rounds began: its message says why')
  return int(status), int(restored_round)


def share(tree):
  """The leader's arrays of `tree` in every process (the others pass arrays of the same shapes)."""
  if count() == 1:
    return tree
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def join(config) -> None:
  """Joins the run's processes (if config.compute.distributed) before JAX starts; with several,
  stops are then acted on between rounds only, all processes together."""
  devices.configure(config)
  if count() > 1:
    signals.hold()


def check_stop() -> None:
  """Raises KeyboardInterrupt in every process if a stop was asked of any (between rounds)."""
  if count() == 1:
    signals.check()
    return
  asked = multihost_utils.process_allgather(np.array([signals.asked()], np.int32))
  if np.any(asked):
    raise KeyboardInterrupt
