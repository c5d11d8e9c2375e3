"""The launcher under faults, with a stand-in for fedprox_jax.run: how it reports a failure, ends a
stopped process, drops the others' consequences and takes its processes down with it; and the
coordinator's port it holds. (Real runs under the same faults: launch_runs_test.py.)"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.commands import gone
from tests.conftest import REPO
from tests.conftest import subprocess_env

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
  assert all(gone(pid) for pid in pids)


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
  while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
  left = [pid for pid in pids if not gone(pid)]
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
