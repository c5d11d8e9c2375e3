"""The command lines under test as subprocesses: one way to run them, start them in the
background, wait on them and say what happened when they did not do what was expected."""
import pathlib
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.conftest import subprocess_env

# Synthetic(1,1) on 12 devices: no data to prepare, a round in milliseconds.
SYNTHETIC_SMALL = [
    '--config=synthetic:1_1', '--config.data.num_clients=12', '--config.clients_per_round=4',
    '--config.client.local_epochs=1', '--config.eval.dissimilarity=False'
]


def mnist_data_flags(root: pathlib.Path, manual_dir=None) -> list[str]:
  """Where a run puts its prepared MNIST copy and partition cache (and finds the files)."""
  flags = [
      f'--config.data.tfds_data_dir={root / "tfds"}', f'--config.data.cache_dir={root / "cache"}'
  ]
  if manual_dir:
    flags.append(f'--config.data.manual_dir={manual_dir}')
  return flags


def command(*args, module: str = 'fedprox_jax.run') -> list[str]:
  return [sys.executable, '-m', module, *args]


def run_module(*args,
               module: str = 'fedprox_jax.run',
               env=None,
               cwd=REPO,
               timeout: float = 600,
               **kwargs) -> subprocess.CompletedProcess:
  """`python -m module args` to its end, in the tests' environment; its output as text."""
  return subprocess.run(command(*args, module=module),
                        cwd=cwd,
                        env=env or subprocess_env(),
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        **kwargs)


def run_code(code: str,
             *args,
             env=None,
             cwd=REPO,
             timeout: float = 600,
             **kwargs) -> subprocess.CompletedProcess:
  """`python -c code args` to its end, as run_module runs a module."""
  return subprocess.run([sys.executable, '-c', code, *args],
                        cwd=cwd,
                        env=env or subprocess_env(),
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        **kwargs)


def start_module(*args,
                 log: pathlib.Path,
                 module: str = 'fedprox_jax.run',
                 env=None,
                 cwd=REPO,
                 **kwargs) -> subprocess.Popen:
  """`python -m module args` in the background, its stderr in the file `log` (a pipe that nobody
  reads would fill and block it); stdout is dropped."""
  with open(log, 'w') as err:  # The child holds its own copy of the descriptor.
    return subprocess.Popen(command(*args, module=module),
                            cwd=cwd,
                            env=env or subprocess_env(),
                            stdout=subprocess.DEVNULL,
                            stderr=err,
                            text=True,
                            **kwargs)


def tail(log: pathlib.Path, chars: int = 3000) -> str:
  try:
    return log.read_text(errors='replace')[-chars:]
  except FileNotFoundError:
    return f'({log} was never written)'


def wait_until(condition,
               proc: subprocess.Popen,
               log: pathlib.Path,
               what: str,
               timeout: float = 600) -> None:
  """Polls `condition()` until it holds. Fails, saying what happened (the exit code and the log's
  tail), when `proc` ends first or `timeout` s pass; a loaded machine only makes it wait longer."""
  deadline = time.monotonic() + timeout
  while not condition():
    code = proc.poll()
    if code is not None and not condition():
      pytest.fail(f'the command ended with exit code {code} before {what}; its log ends:\n'
                  f'{tail(log)}')
    if time.monotonic() > deadline:
      stop(proc)
      pytest.fail(f'no {what} after {timeout} s; the command was stopped; its log ends:\n'
                  f'{tail(log)}')
    time.sleep(0.05)


def child_pids(proc: subprocess.Popen, pattern: str) -> list[str]:
  """The pids of `proc`'s children whose command line matches `pattern` (pgrep -f)."""
  found = subprocess.run(['pgrep', '-P', str(proc.pid), '-f', pattern],
                         capture_output=True,
                         text=True,
                         check=False)
  return found.stdout.split()


def stop(proc: subprocess.Popen) -> None:
  """Kills `proc` if it still runs and reaps it (no zombie, no open pipe left behind)."""
  if proc.poll() is None:
    proc.kill()
  proc.communicate()


def gone(pid: int) -> bool:
  """Whether process `pid` has ended (exited, or a zombie that nobody has reaped yet)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
  except FileNotFoundError:
    return True
