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
stderr passes through a small guard process that puts one line in place of that abort's dumps.
"""
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from fedprox_jax import signals
from fedprox_jax.engine import devices
from fedprox_jax.errors import ConfigError

# What the leader tells the others before the rounds: go on (from round 0 or its checkpoint's),
# the run is already complete, or it stopped (its own message says why).
START, COMPLETE, FAILED = 0, 1, 2

# The launcher's process id, in the environment of the processes it starts: a process whose parent
# is no longer the launcher (killed with -9) ends itself (Linux also ends it by PR_SET_PDEATHSIG).
LAUNCHER_PID_ENV = 'FEDPROX_JAX_LAUNCHER_PID'

_KEY = 'fedprox_jax'  # The run's keys in the coordination service's store.
_BEAT_S = 0.5  # How often a process beats (and reads the others' beats).
_SLICE_MS = 500  # A wait in the store is cut in slices, between which the watch is read.
_CONFIRM_S = 3.0  # After a failed cross-process step: how long a peer's silence is looked for.
_RERUN = 'rerun the same command to resume from the last checkpoint'

# How another process was lost (PeerLost.kind).
OWN_ERROR, GONE, CLOSED, SILENT, TIMEOUT = 'own error', 'gone', 'closed', 'silent', 'timeout'


class PeerLost(Exception):
  """Another process of the run is gone: `kind` says how, `cause` in words; `process` is its index
  where known. `quiet` when it stopped on an error of its own (it said why itself)."""

  def __init__(self, kind: str, cause: str, process: int | None = None):
    super().__init__(f'another process of the run stopped ({cause}): {_RERUN}')
    self.kind, self.cause, self.process = kind, cause, process
    self.quiet = kind == OWN_ERROR


def count() -> int:
  return jax.process_count()


def is_leader() -> bool:
  return jax.process_index() == 0


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


class _Watch:
  """The others' beats, as this process sees them; two daemon threads: one beats and reads the
  store (its calls may hang on a coordinator that stopped), one judges from what it read."""

  def __init__(self, client, me: int, n: int, timeout_s: float):
    self.client, self.me, self.n, self.timeout_s = client, me, n, timeout_s
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
          self.client.key_value_set(f'{_KEY}/pid/{self.me}',
                                    f'{machine} {os.getpid()}',
                                    allow_overwrite=True)
          published = True
        if known < self.n:
          known = self._read_pids(machine)
        self.client.key_value_set(f'{_KEY}/alive/{self.me}', str(beat), allow_overwrite=True)
        beats = dict(self.client.key_value_dir_get(f'{_KEY}/alive/'))
        stopped = dict(self.client.key_value_dir_get(f'{_KEY}/stopped/'))
        done = dict(self.client.key_value_dir_get(f'{_KEY}/done/'))
      except Exception:  # pylint: disable=broad-except  # Not answering: the judge counts it.
        time.sleep(_BEAT_S)
        continue
      now = time.monotonic()
      with self.lock:
        self.answered = now
        for j, (last, _) in self.beats.items():
          value = beats.get(f'{_KEY}/alive/{j}')
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
    given = self.client.key_value_dir_get(f'{_KEY}/pid/')
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
        if j not in self.done and _gone(pid):
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
      end(lost)

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


_watch: list[_Watch | None] = [None]

# What a run's process writes to stderr, when it is one of several, goes through a small process
# of its own: JAX aborts a process whose coordinator is gone (its agent's check failure, with a C++
# dump of the stack and Python's dump of the threads), before Python can say anything; the guard
# passes every line on (a moment later) and puts one line in place of such a dump.
_GUARD = r'''
import os, re, select, sys, time
index = sys.argv[1]
fatal = re.compile(rb'^(F\d{4} \d\d:\d\d:\d\d|\*\*\* Check failure|terminate called|'
                   rb'Fatal Python error)')
rerun = 'rerun the same command to resume from the last checkpoint'
pending, dump, rest, said = [], None, b'', False

def write(line):
  global said
  said = said or line.startswith(b'error')
  os.write(1, line)

def one_line(dump):
  text = ' '.join(dump.decode(errors='replace').split())
  if 'stopped sending heartbeats' in text:
    tasks = re.search(r'stopped sending heartbeats\): ([\d ,]+)', text)
    who = f'process {tasks.group(1).strip()}' if tasks else 'a process'
    return (f'error: another process of the run stopped ({who} sent no heartbeat: stopped, hung, '
            f'or its host or network lost): {rerun}')
  if 'coordination service' in text and ('Failed to send RPC' in text or 'leader' in text):
    return ('error: another process of the run stopped (process 0, the coordinator, is gone: '
            f'killed, crashed, or its host or network lost): {rerun}')
  message = text.split('] ', 1)[-1][:200]
  return f'error: JAX aborted process {index} of the run ({message}): {rerun}'

while True:
  now = time.monotonic()
  wait = max(0.0, pending[0][0] + 0.1 - now) if pending else None
  ready, _, _ = select.select([0], [], [], wait)
  chunk = os.read(0, 65536) if ready else b''
  if ready and not chunk:
    break
  rest += chunk
  *lines, rest = rest.split(b'\n')
  now = time.monotonic()
  for line in lines:
    line += b'\n'
    if dump is not None:
      dump += line
    elif fatal.match(line):
      dump, pending = line, []  # Its preamble (JAX's notes on the error) goes with it.
    else:
      pending.append((now, line))
  while pending and now - pending[0][0] >= 0.1:
    write(pending.pop(0)[1])
if dump is None:
  for _, line in pending:
    write(line)
  if rest:
    write(rest)
elif not said:
  write((one_line(dump) + '\n').encode())
'''


def _guard_stderr(index: int) -> None:
  """Sends this process's stderr (Python's and C++'s) through the guard (above), which ignores
  Ctrl-C and SIGTERM (they are the run's to act on) and ends when this process does."""
  if os.name != 'posix' or _guarded:
    return
  _flush()
  read, write = os.pipe()
  stops = (signal.SIGINT, signal.SIGTERM)
  handlers = [signal.signal(signum, signal.SIG_IGN) for signum in stops]  # Inherited, ignored.
  try:
    _guarded.append(
        subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, '-S', '-c', _GUARD, str(index)],
            stdin=read,
            stdout=2,
            close_fds=True))
  finally:
    for signum, handler in zip(stops, handlers):
      signal.signal(signum, handler)
  os.close(read)
  os.dup2(write, 2)
  os.close(write)


_guarded = []


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


def _gone(pid: int) -> bool:
  """Whether process `pid` (of this machine) has ended: no such process, or a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
  except FileNotFoundError:
    return True
  except (OSError, IndexError):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    except OSError:
      pass
    return False


def _flush() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass


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
  _flush()
  if _guarded:  # Its last lines out before this process is seen to end.
    with contextlib.suppress(Exception):
      os.close(2)
      _guarded[0].wait(timeout=2)
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
      if verdict.kind in (OWN_ERROR, GONE):
        return verdict
      return PeerLost(
          CLOSED, f'process {verdict.process} closed its connection: killed, crashed, or its '
          'host went down', verdict.process)
    if time.monotonic() > deadline:
      break
    time.sleep(0.1)
  text = str(e)
  if 'DEADLINE_EXCEEDED' in text or 'timed out' in text:
    first = ' '.join(text.split())[:200]
    return PeerLost(TIMEOUT,
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
    watch.client.key_value_set(f'{_KEY}/stopped/{watch.me}', reason[:500], allow_overwrite=True)


def _ending() -> None:
  """At exit (before JAX's own shutdown): this process's part is over; the others expect no
  more beats from it."""
  watch = _watch[0]
  if watch is None:
    return
  watch.finish()
  with contextlib.suppress(Exception):
    if not watch.left:
      watch.client.key_value_set(f'{_KEY}/done/{watch.me}', '1', allow_overwrite=True)


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
  watch.client.key_value_set(f'{_KEY}/{name}/{seq}/{watch.me}', str(value))
  values = [int(_get(f'{_KEY}/{name}/{seq}/{j}')) for j in range(watch.n)]
  if seq:  # Everyone wrote this one, so read the last one: it can go.
    with contextlib.suppress(Exception):
      watch.client.key_value_delete(f'{_KEY}/{name}/{seq - 1}/{watch.me}')
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
    _watch[0].client.key_value_set(f'{_KEY}/word/{_words[0]}', f'{status},{restored_round}')


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
  status, restored_round = map(int, _get(f'{_KEY}/word/{_words[0]}').split(','))
  if status == FAILED:
    raise ConfigError('process 0 stopped before the rounds began: its message says why')
  return status, restored_round


def share(tree):
  """The leader's arrays of `tree` in every process (the others pass arrays of the same shapes)."""
  if count() == 1:
    return tree
  _agree('share', 0)  # All there first: the collective's own setup allows 30 s only.
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def join(config) -> None:
  """Joins the run's processes (if config.compute.distributed) before JAX starts; with several,
  stops are then acted on between rounds only, all processes together, and the others are
  watched."""
  if config.compute.distributed:
    _guard_stderr(config.compute.process_id)
  devices.configure(config)
  if count() > 1:
    signals.hold()
    if _watch[0] is None:
      _watch[0] = _Watch(_client(), jax.process_index(), count(),
                         float(config.compute.heartbeat_timeout_s))
      _watch[0].start()
      atexit.register(_ending)  # Runs before JAX's shutdown (registered at its import).


def check_stop() -> None:
  """Raises KeyboardInterrupt in every process if a stop was asked of any (between rounds)."""
  if count() == 1:
    signals.check()
    return
  if any(_agree('stop', int(signals.asked()))):
    raise KeyboardInterrupt
