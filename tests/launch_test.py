"""The launcher and the processes of one run under faults: a stand-in for fedprox_jax.run (quick)
shows how the launcher reports a failure, ends a stopped process, drops the others' consequences
and takes its processes down with it; real runs (slow) show the same through JAX: a slow leader
waited for, a hung process named in one line, a failing leader followed in order, the
coordinator on loopback only, the processes gone with a killed launcher and the run resumed."""
import json
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

from tests.commands import stop
from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.runs import records

pytestmark = pytest.mark.slow  # Every test runs the command line or whole runs.

# A stand-in for a run's process: does what $FAKE_PLAN says for its process id.
FAKE = textwrap.dedent('''
    import json, os, signal, sys, time
    me = int([a for a in sys.argv if a.startswith('--config.compute.process_id=')][0][28:])
    plan = json.loads(os.environ['FAKE_PLAN'])[str(me)]
    with open(os.path.join(os.environ['FAKE_DIR'], f'pid{me}'), 'w') as f:
      f.write(str(os.getpid()))
    print(f'I0101 00:00:00.000000 1 fake.py:1] process {me} started', file=sys.stderr, flush=True)
    if plan.get('hold'):  # As a run's processes, which act on a stop between rounds only.
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if 'after' in plan:  # Once that process has ended.
      path = os.path.join(os.environ['FAKE_DIR'], f'pid{plan["after"]}')
      while not (os.path.exists(path) and open(path).read()):
        time.sleep(0.001)
      stat = f'/proc/{open(path).read()}/stat'
      while os.path.exists(stat) and open(stat).read().rsplit(')', 1)[1].split()[0] != 'Z':
        time.sleep(0.001)
      time.sleep(plan['gap'])
    for line in plan.get('say', []):
      print(line, file=sys.stderr, flush=True)
    if plan.get('do') == 'stop':
      os.kill(os.getpid(), signal.SIGSTOP)
    elif plan.get('do') == 'kill':
      os.kill(os.getpid(), signal.SIGKILL)
    elif plan.get('do') == 'abort':
      os.abort()
    time.sleep(plan.get('sleep', 0))
    sys.exit(plan.get('exit', 0))
''')

# What JAX prints when it aborts a process whose coordinator is gone (abridged).
DUMP = [
    'E1203 13:33:50.292106   15854 coordination_service_agent.cc:289] Polled an error from '
    'coordination service (this can be an error from this or another task).',
    'F1203 13:33:50.292119   15854 client.h:80] Terminating process because the JAX distributed '
    'service detected fatal errors. absl::Status: UNAVAILABLE: Failed to send RPC',
    ':UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"Socket closed"}',
    '*** Check failure stack trace: ***',
    '    @     0x7fed10020634  absl::lts_20260107::log_internal::LogMessage::SendToLog()',
    'Fatal Python error: Aborted',
    'Thread 0x00007fed (most recent call first):',
]


def _fake_launch(tmp_path, plan, **popen):
  (tmp_path / 'fake_process.py').write_text(FAKE)
  env = subprocess_env(FAKE_PLAN=json.dumps(plan), FAKE_DIR=str(tmp_path))
  env['PYTHONPATH'] = f'{tmp_path}{os.pathsep}{env["PYTHONPATH"]}'
  return subprocess.Popen(
      [sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', '--module=fake_process'],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      **popen)


def _pid(tmp_path, i, timeout=30):
  path = tmp_path / f'pid{i}'
  deadline = time.monotonic() + timeout
  while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
    time.sleep(0.02)
  return int(path.read_text())


def _gone(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
  except FileNotFoundError:
    return True


def _errors(err: str) -> list[str]:
  return [line for line in err.splitlines() if line.startswith('error')]


def test_the_first_failure_in_time_sets_the_code_and_alone_is_said(tmp_path):
  """Process 1 fails first (code 3), process 0 a moment later (code 5): 3, and 1's line only."""
  launched = _fake_launch(
      tmp_path, {
          '0': {
              'hold': True,
              'after': 1,
              'gap': 0.03,
              'say': ['error: process 0 lost the other'],
              'exit': 5
          },
          '1': {
              'sleep': 1,
              'say': ['error: process 1 failed on its own'],
              'exit': 3
          }
      })
  _, err = launched.communicate(timeout=60)
  assert launched.returncode == 3, err
  assert _errors(err) == ['error: process 1 failed on its own'], err
  assert 'process 0 started' in err and 'process 1 started' in err  # The logs come through.


def test_a_stopped_process_is_ended_at_once_and_named(tmp_path):
  launched = _fake_launch(tmp_path, {'0': {'sleep': 120}, '1': {'do': 'stop', 'sleep': 120}})
  pids = [_pid(tmp_path, 0), _pid(tmp_path, 1)]
  started = time.monotonic()
  try:
    _, err = launched.communicate(timeout=20)
  except subprocess.TimeoutExpired:
    for pid in pids:
      os.kill(pid, signal.SIGKILL)
    launched.kill()
    pytest.fail('the launcher waits on a stopped process')
  assert time.monotonic() - started < 10
  assert launched.returncode == 128 + signal.SIGSTOP
  assert _errors(err) == [
      'error: process 1 of the run was stopped by signal 19 (SIGSTOP), which holds up the '
      'others: the run was ended; rerun the same command to resume from the last checkpoint'
  ], err
  assert all(_gone(pid) for pid in pids)


def test_a_killed_process_is_said_once_without_the_others_dumps(tmp_path):
  """Process 0 is killed; process 1 then aborts as JAX does (C++ and Python dumps) and prints
  its own account: the user reads the launcher's one line."""
  launched = _fake_launch(
      tmp_path, {
          '0': {
              'sleep': 1,
              'do': 'kill'
          },
          '1': {
              'after': 0,
              'gap': 0.1,
              'say': [*DUMP[:1], 'error: another process of the run stopped (...)', *DUMP[1:]],
              'do': 'abort'
          }
      })
  _, err = launched.communicate(timeout=60)
  assert launched.returncode == 128 + signal.SIGKILL
  assert _errors(err) == [
      'error: process 0 of the run was killed by signal 9 (SIGKILL): rerun the same command to '
      'resume from the last checkpoint'
  ], err
  assert not any(line in err for line in DUMP), err


def test_an_abort_that_comes_first_is_said_in_one_line(tmp_path):
  launched = _fake_launch(tmp_path, {'0': {'sleep': 120}, '1': {'say': DUMP, 'do': 'abort'}})
  _, err = launched.communicate(timeout=60)
  assert launched.returncode == 128 + signal.SIGABRT
  lines = [line for line in err.splitlines() if 'fake.py' not in line]
  assert len(lines) == 1 and lines[0].startswith(
      'error: process 1 of the run aborted (Terminating process because the JAX distributed '
      'service detected fatal errors.'), err
  assert lines[0].endswith('rerun the same command to resume from the last checkpoint')


def test_the_processes_end_with_the_launcher(tmp_path):
  launched = _fake_launch(tmp_path, {'0': {'sleep': 120}, '1': {'sleep': 120}})
  pids = [_pid(tmp_path, 0), _pid(tmp_path, 1)]
  launched.kill()  # SIGKILL: the launcher can do nothing about it.
  launched.wait()  # (Not its pipes: processes that outlive it hold them.)
  deadline = time.monotonic() + 5
  while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
  left = [pid for pid in pids if not _gone(pid)]
  for pid in left:
    os.kill(pid, signal.SIGKILL)
  launched.communicate()
  assert not left, 'processes of the run outlived their launcher'


def test_the_launcher_holds_the_coordinators_port():
  from fedprox_jax import launch  # pylint: disable=g-import-not-at-top
  held, port = launch.hold_port()
  try:
    with socket.socket() as other:  # Another program cannot take it...
      with pytest.raises(OSError):
        other.bind(('127.0.0.1', port))
    with socket.socket() as coordinator:  # ...the coordinator (SO_REUSEPORT, as gRPC) can.
      coordinator.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
      coordinator.bind(('127.0.0.1', port))
      coordinator.listen()
  finally:
    held.close()


def test_a_coordinator_port_in_use_is_said_in_one_line(tmp_path):
  with socket.socket() as other:
    other.bind(('127.0.0.1', 0))
    other.listen()
    port = other.getsockname()[1]
    result = subprocess.run([
        sys.executable, '-m', 'fedprox_jax.run', '--config=synthetic:1_1', '--workdir=',
        '--config.compute.distributed=True',
        f'--config.compute.coordinator_address=127.0.0.1:{port}',
        '--config.compute.num_processes=2', '--config.compute.process_id=0'
    ],
                            cwd=REPO,
                            env=subprocess_env(),
                            capture_output=True,
                            text=True,
                            timeout=120)
  assert result.returncode == 1
  lines = [line for line in result.stderr.splitlines() if not re.match(r'[IW]\d{4} ', line)]
  assert lines == [
      f'error: the coordinator\'s address 127.0.0.1:{port} cannot be taken (Address already in '
      'use): another program uses that port; give compute.coordinator_address another port '
      '(fedprox_jax.launch picks a free one)'
  ], result.stderr


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
    while not (_gone(leader) and _gone(other)) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert _gone(leader) and _gone(other), 'processes of the run outlived their launcher'
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
