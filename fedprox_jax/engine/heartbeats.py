"""The watch that each process of a run keeps on the others, through the coordination service's
key-value store.

Each process beats every half second in the store, and reads the others' beats. Another process is
lost (PeerLost) when it stopped on an error of its own (it says so in the store first), when it is
gone (killed, crashed: at once on the same machine, where its process id tells), or when it sent no
beat for compute.heartbeat_timeout_s (stopped, hung, its host lost); a process whose launcher was
killed ends itself. What follows a loss is the caller's (engine/processes.py): the watch judges,
and hands its verdict to `on_lost` unless the main thread waits in the store and acts on it there.
"""
from collections.abc import Callable
import os
import socket
import threading
import time

from fedprox_jax import files

# The launcher's process id, in the environment of the processes it starts: a process whose parent
# is no longer the launcher (killed with -9) ends itself (Linux also ends it by PR_SET_PDEATHSIG).
LAUNCHER_PID_ENV = 'FEDPROX_JAX_LAUNCHER_PID'

KEY = 'fedprox_jax'  # The run's keys in the coordination service's store.
_BEAT_S = 0.5  # How often a process beats (and reads the others' beats).
RERUN = 'rerun the same command to resume from the last checkpoint'

# How another process was lost (PeerLost.kind).
OWN_ERROR, GONE, CLOSED, SILENT, TIMEOUT = 'own error', 'gone', 'closed', 'silent', 'timeout'


class PeerLost(Exception):
  """Another process of the run is gone: `kind` says how, `cause` in words; `process` is its index
  where known. `quiet` when it stopped on an error of its own (it said why itself)."""

  def __init__(self, kind: str, cause: str, process: int | None = None):
    super().__init__(f'another process of the run stopped ({cause}): {RERUN}')
    self.kind, self.cause, self.process = kind, cause, process
    self.quiet = kind == OWN_ERROR


class Watch:
  """The others' beats, as this process sees them; two daemon threads: one beats and reads the
  store (its calls may hang on a coordinator that stopped), one judges from what it read and hands
  a loss to `on_lost` (which ends the process: the main thread may be held in a collective)."""

  def __init__(self, client, me: int, n: int, timeout_s: float, on_lost: Callable[[PeerLost],
                                                                                  None]):
    self.client, self.me, self.n, self.timeout_s = client, me, n, timeout_s
    self.on_lost = on_lost
    now = time.monotonic()
    self.lock = threading.Lock()
    self.answered = now  # When the store last answered.
    self.beats = {j: (None, now) for j in range(n) if j != me}  # Last beat read, when it changed.
    self.stopped: dict[int, str] = {}  # Processes that stopped on an error of their own: why.
    self.done: set[int] = set()  # Processes that ended their part (no beat expected).
    self.waiting = 0  # >0 while the main thread waits in the store (it acts on a verdict itself).
    self.finished = False  # This process is ending: nothing more to judge.
    self.left = False  # This process left the run (JAX's shutdown) after a peer's own error.
    self.launcher = int(os.environ.get(LAUNCHER_PID_ENV, '0') or 0)
    self.pids: dict[int, int] = {}  # The others that share this machine's process ids: theirs.

  def start(self) -> None:
    for target in (self._beat, self._judge):
      threading.Thread(target=target, name=f'fedprox_jax-{target.__name__[1:]}',
                       daemon=True).start()

  def _beat(self) -> None:
    beat, published, known = 0, False, 0
    machine = _machine()
    while not self.finished:
      beat += 1
      try:
        if not published:
          self.client.key_value_set(f'{KEY}/pid/{self.me}',
                                    f'{machine} {os.getpid()}',
                                    allow_overwrite=True)
          published = True
        if known < self.n:
          known = self._read_pids(machine)
        self.client.key_value_set(f'{KEY}/alive/{self.me}', str(beat), allow_overwrite=True)
        beats = dict(self.client.key_value_dir_get(f'{KEY}/alive/'))
        stopped = dict(self.client.key_value_dir_get(f'{KEY}/stopped/'))
        done = dict(self.client.key_value_dir_get(f'{KEY}/done/'))
      except Exception:  # pylint: disable=broad-except  # Not answering: the judge counts it.
        time.sleep(_BEAT_S)
        continue
      now = time.monotonic()
      with self.lock:
        self.answered = now
        for j, (last, _) in self.beats.items():
          value = beats.get(f'{KEY}/alive/{j}')
          if value is not None and value != last:
            self.beats[j] = (value, now)
        self.stopped.update({
            int(k.rsplit('/', 1)[1]): v for k, v in stopped.items() if not k.endswith(f'/{self.me}')
        })
        self.done.update(int(k.rsplit('/', 1)[1]) for k in done)
      time.sleep(_BEAT_S)

  def _read_pids(self, machine: str) -> int:
    """The process ids of the others on this machine (in this pid namespace), as they gave them;
    how many processes gave theirs."""
    given = self.client.key_value_dir_get(f'{KEY}/pid/')
    for key, value in given:
      j = int(key.rsplit('/', 1)[1])
      theirs, _, pid = value.rpartition(' ')
      if j != self.me and theirs == machine:
        with self.lock:
          self.pids[j] = int(pid)
    return len(given)

  def verdict(self, silent_s: float | None = None) -> PeerLost | None:
    """The first process found gone: one that stopped on its own error, or (with `silent_s`, by
    default compute.heartbeat_timeout_s) one silent that long; None if all are there."""
    silent_s = self.timeout_s if silent_s is None else silent_s
    now = time.monotonic()
    with self.lock:
      for j, why in sorted(self.stopped.items()):
        return PeerLost(OWN_ERROR, f'process {j} failed: {why}', j)
      for j, pid in sorted(self.pids.items()):
        if j not in self.done and files.process_ended(pid):
          return PeerLost(GONE, f'process {j} is gone: killed, or crashed', j)
      if self.me != 0 and now - self.answered > silent_s:
        return PeerLost(
            SILENT, f'process 0, the coordinator, did not answer for {now - self.answered:.0f} s: '
            'stopped, hung, or its host or network lost', 0)
      for j, (_, changed) in sorted(self.beats.items()):
        if j not in self.done and now - changed > silent_s:
          return PeerLost(
              SILENT, f'process {j} sent no heartbeat for {now - changed:.0f} s: stopped, hung, '
              'or its host or network lost', j)
    return None

  def _judge(self) -> None:
    while True:
      time.sleep(_BEAT_S / 2)
      if self.launcher and os.getppid() != self.launcher:
        os._exit(1)  # pylint: disable=protected-access  # The launcher was killed: so are we.
      with self.lock:
        if self.finished:
          return
        if self.left or self.waiting:
          continue  # (The main thread's wait acts on a verdict itself.)
      lost = self.verdict()
      if lost is None:
        continue
      if lost.quiet:  # The other process waits in JAX's shutdown: leave with it, in order.
        self.leave()
        continue
      # The main thread is held inside a collective with a process that will not answer.
      self.on_lost(lost)

  def leave(self) -> None:
    """Leaves the run through JAX's shutdown (the processes that stopped wait there for the
    others); the main thread's next collective then fails, and it ends quietly."""
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    with self.lock:
      if self.finished or self.left:
        return
      self.left = True  # JAX's own shutdown at exit then finds nothing to shut down.
      state = distributed.global_state
      client, state.client = state.client, None
      manager, state.preemption_sync_manager = state.preemption_sync_manager, None
    try:
      if manager is not None:
        manager.shutdown()
      if client is not None:
        client.shutdown()
    except Exception:  # pylint: disable=broad-except  # Already gone: nothing to leave.
      pass

  def finish(self) -> None:
    """This process is ending (its own error, a stop or the end of its part): the watch stops."""
    with self.lock:
      self.finished = True


def _machine() -> str:
  """This kernel and pid namespace: processes that share them see each other's process ids."""
  parts = []
  for path in ('/proc/sys/kernel/random/boot_id', '/proc/self/ns/pid'):
    try:
      if path.endswith('/pid'):
        parts.append(os.readlink(path))
      else:
        with open(path) as f:
          parts.append(f.read().strip())
    except OSError:
      parts.append('')
  return '-'.join(parts).replace(' ', '') if any(parts) else socket.gethostname()
