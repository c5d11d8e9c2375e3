"""One run over several processes on this machine, through jax.distributed:

    python -m fedprox_jax.launch --processes=2 -- --config=mnist_fedprox --workdir=/tmp/run

starts `python -m fedprox_jax.run` (`--module` chooses another) N times with distributed mode on,
a free port for the coordinator and each process's id; the processes' logs come through (process
0 speaks for the run, the others log warnings and errors). Ctrl-C and SIGTERM are passed on to
every process; when one ends with an error the others are stopped. The exit code is the first
failure's (0 when all succeed). On several hosts, run the same command line as this one builds on
each host (see README: Scaling out).
"""
import signal
import socket
import subprocess
import sys
import time

from absl import app
from absl import flags

_PROCESSES = flags.DEFINE_integer('processes', 2, 'Processes to start.')
_MODULE = flags.DEFINE_string('module', 'fedprox_jax.run', 'The command each process runs.')
_GRACE = flags.DEFINE_float('grace_s', 30.0,
                            'After one process fails, seconds the others get to stop.')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def commands(module: str, num_processes: int, port: int, args: list[str]) -> list[list[str]]:
  """The command line of each process."""
  return [[
      sys.executable, '-m', module, *args, '--config.compute.distributed=True',
      f'--config.compute.coordinator_address=127.0.0.1:{port}',
      f'--config.compute.num_processes={num_processes}', f'--config.compute.process_id={i}'
  ] for i in range(num_processes)]


def supervise(procs: list[subprocess.Popen], grace_s: float) -> int:
  """Waits for every process; after the first failure the others get `grace_s` to stop, then are
  killed. The first failure's exit code, else 0."""
  failed_at, code = None, 0
  while any(p.poll() is None for p in procs):
    for p in procs:
      if p.poll() not in (None, 0) and not code:  # The first failure.
        code, failed_at = p.returncode, time.monotonic()
        if code < 0:  # Killed: it could not say so itself.
          print(
              f'error: process {procs.index(p)} of the run was killed by signal {-code}: rerun '
              'the same command to resume from the last checkpoint',
              file=sys.stderr)
        for other in procs:
          if other.poll() is None:
            other.send_signal(signal.SIGTERM)
    if failed_at is not None and time.monotonic() - failed_at > grace_s:
      for p in procs:
        if p.poll() is None:
          p.kill()
    time.sleep(0.1)
  for p in procs:
    if p.returncode and not code:
      code = p.returncode
  return 128 - code if code < 0 else code  # Killed by a signal: the shell's 128 + signal.


def main(argv: list[str]) -> None:
  if _PROCESSES.value < 1:
    sys.exit(f'error: --processes = {_PROCESSES.value} must be >= 1')
  args = argv[1:]
  if args and args[0] == '--':
    args = args[1:]
  procs = [
      subprocess.Popen(command)  # pylint: disable=consider-using-with
      for command in commands(_MODULE.value, _PROCESSES.value, _free_port(), args)
  ]

  def forward(signum, frame):
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, forward)
  sys.exit(supervise(procs, _GRACE.value))


if __name__ == '__main__':
  app.run(main)
