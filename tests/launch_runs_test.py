"""The processes of one real run under faults, through JAX: a slow leader waited for, a hung
process named in one line, a lost coordinator and a failing leader said in one line, the
coordinator on loopback only, the processes gone with a killed launcher and the run resumed."""
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.commands import gone
from tests.commands import stop
from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.runs import records

pytestmark = pytest.mark.slow  # Every test runs the command line or whole runs.

# Real runs: two processes of one device each over Synthetic(1,1) (no data to prepare).
RUN = [
    '--config=synthetic:1_1', '--config.data.num_clients=40', '--config.clients_per_round=5',
    '--config.client.local_epochs=2', '--config.checkpoint_every=4',
    '--config.eval.dissimilarity=False', '--config.compute.cpu_devices=1'
]


@pytest.fixture(scope='module')
def run_env(tmp_path_factory):
  """The tests' environment, and a folder for the runs' shared compilation cache."""
  return subprocess_env(), tmp_path_factory.mktemp('runs')


def _run_flags(root, workdir, rounds, *more):
  return [
      *RUN, f'--config.num_rounds={rounds}', f'--workdir={workdir}',
      f'--config.compute.compilation_cache_dir={root / "xla"}', *more
  ]


def _launch(env, root, workdir, rounds, *more, module='fedprox_jax.run'):
  return subprocess.Popen([
      sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', f'--module={module}', '--',
      *_run_flags(root, workdir, rounds, *more)
  ],
                          cwd=REPO,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)


def _two_processes(env, root, workdir, rounds, *more):
  """The launcher's two command lines, started here (as on two hosts): each one's stderr."""
  from fedprox_jax import launch  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  return [
      subprocess.Popen(command,
                       cwd=REPO,
                       env=env,
                       stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE,
                       text=True) for command in launch.commands(
                           'fedprox_jax.run', 2, port, _run_flags(root, workdir, rounds, *more))
  ]


def _until_checkpoint(workdir, round_index, launched, timeout=300):
  deadline = time.monotonic() + timeout
  path = workdir / 'checkpoints' / str(round_index)
  while not path.is_dir():
    assert time.monotonic() < deadline, f'no checkpoint of round {round_index}'
    ended = [p for p in launched if p.poll() is not None]
    assert not ended, ended[0].stderr.read()[-3000:]
    time.sleep(0.05)


def _process_pid(workdir, i):
  found = subprocess.run(['pgrep', '-f', f'{workdir} .*process_id={i}'],
                         capture_output=True,
                         text=True,
                         check=False).stdout.split()
  assert len(found) == 1, found
  return int(found[0])


def _said(err: str) -> list[str]:
  """What a run said beyond its log: its error lines, and anything that is not a log line."""
  return [
      line for line in err.splitlines()
      if line.strip() and not re.match(r'([IW]\d{4} \d\d:\d\d|\[Gloo\] )', line)
  ]


# The leader, slowed on purpose: it loads the data SLOW_S later than it would (gloo's own setup
# gives the others 30 s to come).
SLOW_S = 35
SLOW_LEADER = textwrap.dedent(f'''
    import sys, time
    from absl import app
    from absl import flags
    from fedprox_jax import run, tasks
    load = tasks.load
    def slow_load(*args, **kwargs):
      if '--config.compute.process_id=0' in sys.argv:
        time.sleep({SLOW_S})
      return load(*args, **kwargs)
    tasks.load = slow_load
    if __name__ == '__main__':
      flags.mark_flag_as_required('config')
      app.run(run.main, flags_parser=run.command_flags.parse_flags)
''')


@pytest.mark.slow
def test_the_others_wait_for_a_slow_leader(run_env, tmp_path):
  env, root = run_env
  env = dict(env, PYTHONPATH=f'{tmp_path}{os.pathsep}{env["PYTHONPATH"]}')
  (tmp_path / 'slow_leader.py').write_text(SLOW_LEADER)
  launched = _launch(env, root, tmp_path / 'run', 8, module='slow_leader')
  _, err = launched.communicate(timeout=600)
  assert launched.returncode == 0, err[-3000:]
  assert _said(err) == [], err[-3000:]
  assert [r['round'] for r in records(tmp_path / 'run')] == list(range(9))


@pytest.mark.slow
def test_a_hung_process_is_named_in_one_line(run_env, tmp_path):
  """Without the launcher (as on two hosts): process 1 stops (SIGSTOP); process 0 says so in one
  line once it has missed its heartbeats for compute.heartbeat_timeout_s."""
  env, root = run_env
  workdir = tmp_path / 'run'
  procs = _two_processes(env, root, workdir, 400, '--config.compute.heartbeat_timeout_s=5')
  try:
    _until_checkpoint(workdir, 4, procs)
    procs[1].send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    _, err = procs[0].communicate(timeout=60)
    assert time.monotonic() - stopped_at < 20
  finally:
    for p in procs:
      stop(p)
  assert procs[0].returncode == 1
  assert _said(err) == [
      'error: another process of the run stopped (process 1 sent no heartbeat for 5 s: stopped, '
      'hung, or its host or network lost): rerun the same command to resume from the last '
      'checkpoint'
  ], err[-3000:]


@pytest.mark.slow
def test_a_lost_coordinator_is_said_in_one_line(run_env, tmp_path):
  """Without the launcher (as on two hosts): process 0, the coordinator, is killed; JAX aborts
  process 1 at once (its C++ and Python dumps), or process 1 finds process 0 gone: either way it
  says so in one line."""
  env, root = run_env
  workdir = tmp_path / 'run'
  procs = _two_processes(env, root, workdir, 400)
  try:
    _until_checkpoint(workdir, 4, procs)
    procs[0].kill()
    _, err = procs[1].communicate(timeout=60)
  finally:
    for p in procs:
      stop(p)
  assert procs[1].returncode != 0
  assert _said(err) in ([
      'error: another process of the run stopped (process 0 is gone: killed, or crashed): rerun '
      'the same command to resume from the last checkpoint'
  ], [
      'error: another process of the run stopped (process 0, the coordinator, is gone: killed, '
      'crashed, or its host or network lost): rerun the same command to resume from the last '
      'checkpoint'
  ]), err[-3000:]


@pytest.mark.slow
def test_a_failing_leader_takes_the_others_out_in_order(run_env, tmp_path):
  """The leader cannot write its checkpoint: it says so, and the other process, told through the
  coordination service, leaves the run through JAX's shutdown with it: both exit 1 at once, one
  line between them, no JAX dump."""
  env, root = run_env
  workdir = tmp_path / 'run'
  procs = _two_processes(env, root, workdir, 400)
  try:
    _until_checkpoint(workdir, 4, procs)
    (workdir / 'checkpoints').rename(workdir / 'moved')
    (workdir / 'checkpoints').write_text('not a directory')
    failed_at = time.monotonic()
    errs = [p.communicate(timeout=90)[1] for p in procs]
    assert time.monotonic() - failed_at < 30
  finally:
    for p in procs:
      stop(p)
  assert [p.returncode for p in procs] == [1, 1]
  said = _said(errs[0])
  assert len(said) == 1 and said[0].startswith('error: the checkpoint of round '), errs[0][-3000:]
  assert _said(errs[1]) == [], errs[1][-3000:]


def _listening(pid: int) -> list[tuple[str, int]]:
  """The TCP sockets process `pid` listens on: (local address, port)."""
  inodes = set()
  for fd in pathlib.Path(f'/proc/{pid}/fd').iterdir():
    try:
      target = os.readlink(fd)
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(target[8:-1])
  found = []
  for table, size in (('tcp', 4), ('tcp6', 16)):
    lines = pathlib.Path(f'/proc/{pid}/net/{table}').read_text().splitlines()[1:]
    for line in lines:
      fields = line.split()
      local, state, inode = fields[1], fields[3], fields[9]
      if state == '0A' and inode in inodes:  # LISTEN
        address, port = local.split(':')
        raw = bytes.fromhex(address)
        words = b''.join(raw[i:i + 4][::-1] for i in range(0, size, 4))
        found.append((socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6,
                                       words), int(port, 16)))
  return found


@pytest.mark.slow
def test_the_coordinator_on_loopback_and_the_processes_gone_with_the_launcher(run_env, tmp_path):
  """While the run goes, process 0's coordinator listens on 127.0.0.1 alone; the launcher killed
  (-9), both processes go within seconds, and the rerun resumes (the workdir is not held)."""
  env, root = run_env
  workdir = tmp_path / 'run'
  launched = _launch(env, root, workdir, 400)
  try:
    _until_checkpoint(workdir, 4, [launched])
    leader, other = _process_pid(workdir, 0), _process_pid(workdir, 1)
    command = pathlib.Path(f'/proc/{leader}/cmdline').read_text()
    port = int(command.split('coordinator_address=127.0.0.1:')[1].split('\0')[0])
    listening = _listening(leader)
    assert port in [p for _, p in listening], listening
    assert all(address in ('127.0.0.1', '::ffff:127.0.0.1') for address, _ in listening), listening
    launched.kill()
    launched.wait()  # (Not its pipes: processes that outlive it hold them.)
    deadline = time.monotonic() + 5
    while not (gone(leader) and gone(other)) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert gone(leader) and gone(other), 'processes of the run outlived their launcher'
  finally:
    for i in (0, 1):
      for pid in subprocess.run(['pgrep', '-f', f'{workdir} .*process_id={i}'],
                                capture_output=True,
                                text=True,
                                check=False).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    launched.communicate()
  done = len(records(workdir))
  rerun = _launch(env, root, workdir, done + 8)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  assert 'Resuming from the checkpoint of round' in err
  assert [r['round'] for r in records(workdir)] == list(range(done + 9))
