"""The launcher's watch over the processes of one run (fedprox_jax/launch.py starts them).

While the run goes well, the processes' stderr is passed on, each line held back for a moment; when
one fails (an error, killed, stopped, aborted), the others are stopped, and the user reads one line:
the failed process's own, or the launcher's for one that could not say it. What the others print as
a consequence (their own account of the loss, JAX's C++ dump of an abort) is held back. A process
reported stopped (SIGSTOP, SIGTSTP) and still stopped a moment later holds up the others: it is
ended at once. The exit code is that first failure's: its exit code, or 128 + N for a signal N; 0
when all succeed.
"""
import collections
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

_RERUN = 'rerun the same command to resume from the last checkpoint'
_HOLD_S = 0.5  # A process's lines wait this long: an abort's preamble is dropped with its dump.
_STOPPED_S = 0.5  # A process reported stopped and still stopped after this long has failed.
# The first line of an abort's dump: absl's FATAL log (JAX's C++ check failures), a C++
# exception's terminate, Python's faulthandler.
_FATAL = re.compile(r'^(F\d{4} \d\d:\d\d:\d\d|\*\*\* Check failure|terminate called|'
                    r'Fatal Python error)')


def _signal_name(signum: int) -> str:
  try:
    return signal.Signals(signum).name
  except ValueError:
    return f'signal {signum}'


def _still_stopped(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] in ('T', 't')
  except (OSError, IndexError):
    return True  # No /proc: as reported.


class _Run:
  """The processes of one run, their exits in the order they came, and their stderr: passed on
  while the run goes well; after a failure, only the failed process's."""

  def __init__(self, procs: list[subprocess.Popen], grace_s: float, out=None):
    n = len(procs)
    self.procs, self.grace_s = procs, grace_s
    self.out = out or sys.stderr.buffer
    self.lock = threading.RLock()
    self.events = queue.Queue()
    self.alive = [True] * n  # Not reaped yet (only these get signals: their pid is theirs).
    self.codes: list[int | None] = [None] * n  # Exit codes; -N: killed by signal N.
    self.eof = [False] * n
    self.exits: list[int] = []  # Processes in the order they exited.
    self.pending = [collections.deque() for _ in procs]  # (time, line) waiting _HOLD_S.
    self.held = [[] for _ in procs]  # 'error...' lines: shown once the process ends, if first.
    self.fatal: list[str | None] = [None] * n  # An abort's first line (the rest is dropped).
    self.stopped_at: dict[int, tuple[float, int]] = {}  # Reported stopped: (when, signal).
    self.first: int | None = None  # The first failure: its output alone is shown.
    self.code = 0
    self.failed_at: float | None = None  # When the first process failed (the grace begins).
    self.stopping = False  # A stop was passed on: exits 128 + N are no failures.
    self.killed = False

  # Threads: one reads each process's stderr, one waits for each process.
  def start(self) -> None:
    for i, p in enumerate(self.procs):
      threading.Thread(target=self._read, args=(i, p), daemon=True).start()
      threading.Thread(target=self._wait, args=(i, p), daemon=True).start()

  def _read(self, i: int, p: subprocess.Popen) -> None:
    for line in iter(p.stderr.readline, b''):
      with self.lock:
        if self.first not in (None, i) or self.fatal[i] is not None:
          continue  # A consequence of the failure, or the rest of an abort's dump.
        text = line.decode(errors='replace')
        if _FATAL.match(text):
          self.fatal[i] = ' '.join(text.split()[4:] if text[0] == 'F' else text.split())
          self.pending[i].clear()  # Its preamble (JAX's notes on the error) goes with it.
        elif text.startswith('error'):
          self.held[i].append(line)
        else:
          self.pending[i].append((time.monotonic(), line))
    self.events.put(('eof', i, 0))

  def _wait(self, i: int, p: subprocess.Popen) -> None:
    if not hasattr(os, 'waitid'):
      code = p.wait()
      with self.lock:
        self.alive[i] = False
      self.events.put(('exit', i, code))
      return
    while True:
      try:
        info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT)
      except ChildProcessError:
        info = None
      if info is not None and info.si_code in (os.CLD_STOPPED, os.CLD_TRAPPED):
        os.waitid(os.P_PID, p.pid, os.WSTOPPED | os.WNOHANG)  # Taken: the next wait blocks.
        self.events.put(('stop', i, info.si_status))
        continue
      with self.lock:  # Reaped under the lock: no signal goes to a pid that is no longer its.
        self.alive[i] = False
        if info is not None:
          os.waitid(os.P_PID, p.pid, os.WEXITED)
          code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        else:
          code = p.returncode if p.returncode is not None else 1
        p.returncode = code
      self.events.put(('exit', i, code))
      return

  def signal_all(self, signum: int, but: int | None = None) -> None:
    with self.lock:
      for i, p in enumerate(self.procs):
        if self.alive[i] and i != but:
          if signum != signal.SIGKILL:
            os.kill(p.pid, signal.SIGCONT)  # A stopped process acts on nothing else.
          os.kill(p.pid, signum)

  def pass_on(self, signum: int, frame) -> None:
    """Ctrl-C and SIGTERM: passed on to every process, which stop after the same round."""
    del frame
    self.stopping = True
    self.signal_all(signum)

  # The main thread: events, the lines' release, the stopped processes, the grace.
  def supervise(self) -> int:
    self.start()
    while not all(self.eof[i] and self.codes[i] is not None for i in range(len(self.procs))):
      try:
        kind, i, value = self.events.get(timeout=0.05)
      except queue.Empty:
        kind = None
      with self.lock:
        if kind == 'eof':
          self.eof[i] = True
        elif kind == 'exit':
          self.codes[i] = value
          self.exits.append(i)
          self.stopped_at.pop(i, None)
          if value and self.failed_at is None and not self.stopping:
            self.failed_at = time.monotonic()
        elif kind == 'stop' and not self.stopping:
          self.stopped_at.setdefault(i, (time.monotonic(), value))
        self._check_stopped()
        self._decide()
        self._release()
        if (self.failed_at is not None and not self.killed and
            time.monotonic() - self.failed_at > self.grace_s):
          self.killed = True
          self.signal_all(signal.SIGKILL)
    with self.lock:
      self._decide(final=True)
      self._release(everything=True)
    return self.code

  def _check_stopped(self) -> None:
    now = time.monotonic()
    for i, (since, signum) in list(self.stopped_at.items()):
      if now - since < _STOPPED_S:
        continue
      del self.stopped_at[i]
      if not self.alive[i] or not _still_stopped(self.procs[i].pid):
        continue  # Continued since (a job stopped and resumed as a whole: Ctrl-Z, fg).
      if self.first is None:
        self._fail(
            i, 128 + signum, f'error: process {i} of the run was stopped by signal {signum} '
            f'({_signal_name(signum)}), which holds up the others: the run was ended; {_RERUN}')
      os.kill(self.procs[i].pid, signal.SIGKILL)

  def _fail(self, i: int, code: int, line: str | None) -> None:
    """Process i is the run's first failure: its line (or `line`, the launcher's) is the one
    shown; the others are stopped, and what they print from now on is not."""
    self.first, self.code = i, code
    if self.failed_at is None:
      self.failed_at = time.monotonic()
    for j in range(len(self.procs)):
      if j != i:
        self.pending[j].clear()
        self.held[j].clear()
    self._release(only=i, everything=True)
    if line is None:
      for held in self.held[i]:
        self.out.write(held)
      self.held[i].clear()
    else:
      self.out.write(f'{line}\n'.encode())
    self.out.flush()
    self.signal_all(signal.SIGTERM, but=i)

  def _decide(self, final: bool = False) -> None:
    """The first failure, in the order the processes exited, of those that said why or could
    not (killed, aborted); one that ended quietly (another's failure made it stop) is no cause."""
    if self.first is not None:
      return
    quiet = None
    for i in self.exits:
      if not self.eof[i]:
        return  # Its last words may still come.
      code = self.codes[i]
      if code == 0:
        for held in self.held[i]:  # 'error...' lines of a process that succeeded: shown.
          self.out.write(held)
        self.held[i].clear()
        continue
      if code < 0:
        what = (f'aborted ({self.fatal[i][:200]})'
                if self.fatal[i] else f'was killed by signal {-code} ({_signal_name(-code)})')
        self._fail(i, 128 - code, f'error: process {i} of the run {what}: {_RERUN}')
        return
      if self.held[i] or self.fatal[i]:
        line = None if self.held[i] else (
            f'error: process {i} of the run aborted ({self.fatal[i][:200]}): {_RERUN}')
        self._fail(i, code, line)
        return
      quiet = i if quiet is None else quiet
    if final and quiet is not None:
      self.code = self.codes[quiet]
      if self.code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # Else a stop, said so.
        self._fail(
            quiet, self.code,
            f'error: process {quiet} of the run ended with exit code {self.code}: '
            f'{_RERUN}')

  def _release(self, only: int | None = None, everything: bool = False) -> None:
    """Passes on the lines that waited long enough (or all: the process ended)."""
    now = time.monotonic()
    for i, lines in enumerate(self.pending):
      if only is not None and i != only:
        continue
      if self.first not in (None, i):
        lines.clear()
        continue
      while lines and (everything or self.eof[i] or now - lines[0][0] >= _HOLD_S):
        self.out.write(lines.popleft()[1])
    self.out.flush()


def supervise(procs: list[subprocess.Popen], grace_s: float) -> int:
  """Waits for every process (their stderr piped here); after the first failure the others get
  `grace_s` to stop, then are killed. The first failure's exit code (128 + N for a signal N),
  else 0."""
  run = _Run(procs, grace_s)
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, run.pass_on)
  return run.supervise()
