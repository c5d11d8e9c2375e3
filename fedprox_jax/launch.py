"""One run over several processes on this machine, through jax.distributed:

    python -m fedprox_jax.launch --processes=2 -- --config=mnist_fedprox --workdir=/tmp/run

starts `python -m fedprox_jax.run` (`--module` chooses another) N times with distributed mode on,
each process's id, and the coordinator on the loopback interface at a port that the launcher
holds for it from the moment it is chosen (bound with SO_REUSEPORT, as the coordinator binds it:
no other program can take it in between). The processes' logs come through (process 0 speaks for
the run, the others log warnings and errors); Ctrl-C and SIGTERM are passed on to every process.

The processes are one run: they end with the launcher (Linux: PR_SET_PDEATHSIG; elsewhere each
process watches its parent), and when one fails (an error, killed, stopped, aborted) the others are
stopped, and the user reads one line: the failed process's own, or the launcher's for one that
could not say it (`error: process 1 of the run was killed by signal 9 (SIGKILL): ...`). What the
others print as a consequence (their own account of the loss, JAX's C++ dump of an abort) is held
back. The exit code is that first failure's: its exit code, or 128 + N for a signal N (killed,
or stopped: a stopped process is ended at once, since the others cannot go on without it); 0 when
all succeed. On several hosts, run the same command line as this one builds on each host (see
docs/usage.md). The watch over the processes is fedprox_jax/launch_supervisor.py's.
"""
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys

from absl import app
from absl import flags

from fedprox_jax import launch_supervisor

_PROCESSES = flags.DEFINE_integer('processes', 2, 'Processes to start.')
_MODULE = flags.DEFINE_string('module', 'fedprox_jax.run', 'The command each process runs.')
_GRACE = flags.DEFINE_float(
    'grace_s', 10.0, 'After one process fails, seconds the others get to stop (they stop by '
    'themselves within seconds of losing it) before they are killed.')

LAUNCHER_PID_ENV = 'FEDPROX_JAX_LAUNCHER_PID'  # As engine/heartbeats.py reads it.
_PR_SET_PDEATHSIG = 1


def hold_port() -> tuple[socket.socket | None, int]:
  """A free port of 127.0.0.1, and the socket that holds it until the coordinator binds it too
  (both with SO_REUSEPORT; a program without it cannot take the port). Where SO_REUSEPORT is
  missing: the port alone (free when chosen)."""
  s = socket.socket()
  if hasattr(socket, 'SO_REUSEPORT'):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(('127.0.0.1', 0))
    return s, s.getsockname()[1]
  with s:
    s.bind(('127.0.0.1', 0))
    return None, s.getsockname()[1]


def commands(module: str, num_processes: int, port: int, args: list[str]) -> list[list[str]]:
  """The command line of each process."""
  return [[
      sys.executable, '-m', module, *args, '--config.compute.distributed=True',
      f'--config.compute.coordinator_address=127.0.0.1:{port}',
      f'--config.compute.num_processes={num_processes}', f'--config.compute.process_id={i}'
  ] for i in range(num_processes)]


def _dies_with(parent: int):
  """A child's setup (subprocess's preexec_fn): it gets SIGKILL when the launcher dies (Linux),
  and ends at once if the launcher is already gone."""
  prctl = None
  if sys.platform.startswith('linux'):
    try:
      prctl = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True).prctl
    except (OSError, AttributeError):
      prctl = None

  def setup() -> None:
    if prctl is not None:
      prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
      os._exit(1)  # pylint: disable=protected-access

  return setup


def main(argv: list[str]) -> None:
  if _PROCESSES.value < 1:
    sys.exit(f'error: --processes = {_PROCESSES.value} must be >= 1')
  args = argv[1:]
  if args and args[0] == '--':
    args = args[1:]
  held, port = hold_port()  # Held until this launcher exits.
  env = dict(os.environ, **{LAUNCHER_PID_ENV: str(os.getpid())})
  setup = _dies_with(os.getpid())
  procs = [
      subprocess.Popen(  # pylint: disable=consider-using-with,subprocess-popen-preexec-fn
          command,
          env=env,
          stderr=subprocess.PIPE,
          preexec_fn=setup) for command in commands(_MODULE.value, _PROCESSES.value, port, args)
  ]
  code = launch_supervisor.supervise(procs, _GRACE.value)
  if held is not None:
    held.close()
  sys.exit(code)


if __name__ == '__main__':
  app.run(main)
