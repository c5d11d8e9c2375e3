"""One run over two processes (jax.distributed on CPU, collectives through gloo), started by the
launcher: the same records as one process with two devices (the same lanes), a process killed
mid-run stops the other with one line, and the rerun resumes to the undisturbed records."""
import json
import signal
import subprocess
import sys
import time

from tests.conftest import REPO

RUN = [
    '--config=mnist_fedprox', '--config.data.num_clients=100', '--config.clients_per_round=5',
    '--config.client.local_epochs=2', '--config.checkpoint_every=4'
]


def _flags(root, workdir, rounds):
  return [
      *RUN, f'--config.num_rounds={rounds}', f'--workdir={workdir}',
      f'--config.data.tfds_data_dir={root / "tfds"}', f'--config.data.cache_dir={root / "cache"}',
      '--config.compute.compilation_cache_dir='
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


def _records(workdir):
  """The records without their timings."""
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [{
      k: v for k, v in json.loads(line).items() if not k.startswith('time/')
  } for line in lines]


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
  return _records(workdir)


def test_two_processes_equal_one_process_with_two_devices(mnist_env, tmp_path):
  env, root = mnist_env
  launched = _launch(env, root, tmp_path / 'two', 12)
  _, err = launched.communicate(timeout=600)
  assert launched.returncode == 0, err[-3000:]
  assert 'Results in' in err and err.count('Results in') == 1  # Process 0 alone speaks...
  two = _records(tmp_path / 'two')
  assert [r['round'] for r in two] == list(range(13))
  assert two == _one_process(env, root, tmp_path / 'one', 12)  # ...and writes: bit for bit.
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['12', '4', '8']


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
  assert launched.returncode != 0
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert lines and 'another process of the run stopped' in lines[-1], err[-3000:]
  assert 'rerun the same command' in lines[-1]
  done = len(_records(workdir))
  assert done < 81  # Stopped before the end...

  rerun = _launch(env, root, workdir, 80)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  assert 'Resuming from the checkpoint of round' in err
  # ...and resumed to the records of an undisturbed run.
  assert _records(workdir) == _one_process(env, root, tmp_path / 'undisturbed', 80)


def test_a_sweep_over_processes_is_refused_in_one_line(mnist_env, tmp_path):
  env, root = mnist_env
  result = subprocess.run([
      sys.executable, '-m', 'fedprox_jax.sweep', '--config=mnist_fedprox', '--sweep=mnist_figure',
      f'--workdir={tmp_path / "sweep"}', '--config.compute.distributed=True'
  ],
                          cwd=REPO,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
  assert result.returncode != 0
  assert 'a sweep runs in one process for now' in result.stderr.strip().splitlines()[-1]


def test_ctrl_c_stops_both_processes_after_the_same_round(mnist_env, tmp_path):
  env, root = mnist_env
  workdir = tmp_path / 'run'
  launched = _launch(env, root, workdir, 80)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and not (workdir / 'checkpoints' / '4').is_dir():
    time.sleep(0.05)
  launched.send_signal(signal.SIGINT)  # The launcher passes it on.
  _, err = launched.communicate(timeout=120)
  assert launched.returncode == 130, err[-3000:]
  said = [line for line in err.splitlines() if line.startswith('interrupted after round')]
  assert len(said) == 1 and 'rerun the same command to resume' in said[0], err[-3000:]
  stopped_after = int(said[0].split()[3].rstrip(';'))
  assert [r['round'] for r in _records(workdir)][-1] == stopped_after < 80
