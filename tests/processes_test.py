"""One run over two processes (jax.distributed on CPU, collectives through gloo), started by the
launcher: the same records as one process with two devices (the same lanes), a process killed
mid-run stops the other with one line, and the rerun resumes to the undisturbed records.

The first launch of a session prepares MNIST in process 0 while process 1 waits for it (longer
than gloo's own 30 s on a slow machine). The runs share the session's compilation cache (a
repeated program is not compiled again). Each test runs whole programs: all are slow."""
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.runs import records

RUN = [
    '--config=mnist_fedprox', '--config.data.num_clients=100', '--config.clients_per_round=5',
    '--config.client.local_epochs=2', '--config.checkpoint_every=4'
]


def _flags(root, workdir, rounds):
  return [
      *RUN, f'--config.num_rounds={rounds}', f'--workdir={workdir}',
      f'--config.data.tfds_data_dir={root / "tfds"}', f'--config.data.cache_dir={root / "cache"}',
      f'--config.compute.compilation_cache_dir={root / "xla"}'
  ]


def _launch(env, root, workdir, rounds, **kwargs):
  return subprocess.Popen([
      sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', '--',
      *_flags(root, workdir, rounds), '--config.compute.cpu_devices=1'
  ],
                          cwd=REPO,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True,
                          **kwargs)


def _one_process(env, root, workdir, rounds):
  result = subprocess.run([
      sys.executable, '-m', 'fedprox_jax.run', *_flags(root, workdir, rounds),
      '--config.compute.cpu_devices=2'
  ],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return records(workdir)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(mnist_env, tmp_path):
  env, root = mnist_env
  launched = _launch(env, root, tmp_path / 'two', 12)
  _, err = launched.communicate(timeout=600)
  assert launched.returncode == 0, err[-3000:]
  assert 'Results in' in err and err.count('Results in') == 1  # Process 0 alone speaks...
  assert 'libtpu' not in err and 'distributed service' not in err  # ...without JAX's chatter...
  two = records(tmp_path / 'two')
  assert [r['round'] for r in two] == list(range(13))
  assert two == _one_process(env, root, tmp_path / 'one', 12)  # ...and writes: bit for bit.
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['12', '4', '8']


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_the_rerun_resumes(mnist_env, tmp_path):
  env, root = mnist_env
  workdir = tmp_path / 'run'
  launched = _launch(env, root, workdir, 80)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:  # Until the checkpoint of round 4 is there.
    if (workdir / 'checkpoints' / '4').is_dir() and (workdir / 'metrics.jsonl').exists() and len(
        (workdir / 'metrics.jsonl').read_text().splitlines()) >= 6:
      break
    time.sleep(0.05)
  follower = subprocess.run(['pgrep', '-f', f'{workdir} .*process_id=1'],
                            capture_output=True,
                            text=True,
                            check=False).stdout.split()
  assert follower, 'the second process is not running'
  killed_at = time.monotonic()
  subprocess.run(['kill', f'-{signal.SIGKILL.value}', *follower], check=True)
  _, err = launched.communicate(timeout=120)
  assert time.monotonic() - killed_at < 60
  assert launched.returncode == 128 + signal.SIGKILL
  lines = [line for line in err.splitlines() if line.startswith('error')]
  # The launcher says which process was killed; what process 0 says of the loss is held back.
  assert lines == [
      'error: process 1 of the run was killed by signal 9 (SIGKILL): rerun the same command to '
      'resume from the last checkpoint'
  ], err[-3000:]
  done = len(records(workdir))
  assert done < 81  # Stopped before the end...

  rerun = _launch(env, root, workdir, 80)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  assert 'Resuming from the checkpoint of round' in err
  # ...and resumed to the records of an undisturbed run.
  assert records(workdir) == _one_process(env, root, tmp_path / 'undisturbed', 80)


SWEEP = [
    '--config=mnist_fedprox', '--sweep=mnist_figure', '--sweep.repeats=1',
    '--sweep.max_runs_per_chunk=3', '--config.num_rounds=30', '--config.data.num_clients=100',
    '--config.clients_per_round=5', '--config.client.local_epochs=2', '--config.checkpoint_every=5'
]


def _sweep_rows(workdir):
  rows = (workdir / 'results.csv').read_text().splitlines()
  columns = rows[0].split(',')
  keep = [i for i, c in enumerate(columns) if not c.startswith('time/')]
  return [[row.split(',')[i] for i in keep] for row in rows]


@pytest.mark.slow
def test_a_sweep_over_two_processes_killed_and_resumed_equals_one_process(mnist_env, tmp_path):
  """Three chunks of three runs: the rerun keeps the finished chunks (the leader tells the other
  process so), resumes the interrupted one, and ends with one process's table."""
  env, root = mnist_env
  data = [
      f'--config.data.tfds_data_dir={root / "tfds"}', f'--config.data.cache_dir={root / "cache"}',
      f'--config.compute.compilation_cache_dir={root / "xla"}'
  ]
  workdir = tmp_path / 'sweep'
  command = [
      sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', '--module=fedprox_jax.sweep',
      '--', *SWEEP, *data, '--sweep.cpu_devices=1', f'--workdir={workdir}'
  ]
  launched = subprocess.Popen(command,
                              cwd=REPO,
                              env=env,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              text=True)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and not (workdir / 'checkpoints' / 'runs3-6' / '10').is_dir():
    time.sleep(0.05)  # Into the second chunk.
  follower = subprocess.run(['pgrep', '-f', f'{workdir} .*process_id=1'],
                            capture_output=True,
                            text=True,
                            check=False).stdout.split()
  assert follower, 'the second process is not running'
  subprocess.run(['kill', f'-{signal.SIGKILL.value}', *follower], check=True)
  _, err = launched.communicate(timeout=120)
  assert launched.returncode != 0, err[-3000:]
  rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Chunk 1/3 is complete: kept as it is' in rerun.stderr
  one = subprocess.run([
      sys.executable, '-m', 'fedprox_jax.sweep', *SWEEP, *data, '--sweep.cpu_devices=2',
      f'--workdir={tmp_path / "one"}'
  ],
                       cwd=REPO,
                       env=env,
                       capture_output=True,
                       text=True,
                       timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  assert _sweep_rows(workdir) == _sweep_rows(tmp_path / 'one')
  assert len(_sweep_rows(workdir)) == 1 + 9 * 31


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_both_processes_after_the_same_round(mnist_env, tmp_path, signum):
  env, root = mnist_env
  workdir = tmp_path / 'run'
  launched = _launch(env, root, workdir, 80)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and not (workdir / 'checkpoints' / '4').is_dir():
    time.sleep(0.05)
  launched.send_signal(signum)  # The launcher passes it on.
  _, err = launched.communicate(timeout=120)
  assert launched.returncode == 128 + signum.value, err[-3000:]
  said = [line for line in err.splitlines() if line.startswith('interrupted after round')]
  assert len(said) == 1 and 'rerun the same command to resume' in said[0], err[-3000:]
  assert not [line for line in err.splitlines() if line.startswith('error')], err[-3000:]
  stopped_after = int(said[0].split()[3].rstrip(';'))
  assert [r['round'] for r in records(workdir)][-1] == stopped_after < 80
