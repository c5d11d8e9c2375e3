"""A new user's first hour: a quiet log that says where the results go, an honest ETA, presets by
name from anywhere, and nothing left behind by a run that never started."""
import datetime
import json
import re
import signal

import matplotlib.pyplot as plt
import pytest

from fedprox_jax import plots
from tests.commands import run_module
from tests.commands import start_module
from tests.commands import stop
from tests.commands import wait_until
from tests.conftest import subprocess_env

SMALL = [
    '--config.data.num_clients=12', '--config.clients_per_round=4',
    '--config.client.local_epochs=1', '--config.eval.dissimilarity=False'
]


def _clock(line: str) -> float:
  """Seconds of the day of an absl log line ('I1125 17:03:21.222320 ...')."""
  stamp = datetime.datetime.strptime(line.split()[1], '%H:%M:%S.%f')
  return stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond / 1e6


@pytest.mark.slow
def test_the_eta_is_the_recent_rate_times_the_rounds_left():
  """The ETA of rounds 250, 500 and 750 of 1000 against the rate the log's own timestamps show
  over the ETA's window (the last 100 rounds with checkpoints every 50): the same interval timed
  twice, so a loaded machine moves both alike. An ETA off by a factor of 1.5 or more, or counting
  the rounds done (a third or three times the rounds left at 250 and 750), fails."""
  result = run_module('--config=synthetic:1_1', '--config.eval.dissimilarity=False',
                      '--config.num_rounds=1000', '--config.eval_every=1',
                      '--config.checkpoint_every=50', '--workdir=')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = {
      int(m.group(1)): (_clock(line), m.group(2)) for line in result.stderr.splitlines()
      for m in [re.search(r'round (\d+)/1000 .* ETA (\d\d:\d\d:\d\d)$', line)]
      if m
  }
  for r in (250, 500, 750):
    h, m, s = map(int, lines[r][1].split(':'))
    per_round = (lines[r - 1][0] - lines[r - 101][0]) / 100
    eta, expected = h * 3600 + m * 60 + s, per_round * (1000 - r)
    assert expected / 1.5 - 1 <= eta <= expected * 1.5 + 1, (r, eta, expected)  # +-1 s: seconds.


@pytest.mark.slow
def test_a_first_run_writes_a_quiet_log_that_says_where_the_results_went(mnist_env, tmp_path):
  env, _ = mnist_env
  result = run_module(
      '--config=mnist_fedprox',
      '--config.num_rounds=2',
      '--config.data.num_clients=100',
      f'--config.data.tfds_data_dir={tmp_path / "tfds"}',  # Prepared by this run.
      f'--config.data.cache_dir={tmp_path / "cache"}',
      cwd=tmp_path,
      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stdout + result.stderr  # Both go to files here, as under nohup or a scheduler.
  assert '\x1b' not in log  # No terminal control codes (progress bars).
  for chatter in ("Unable to initialize backend 'tpu'", 'oneDNN', 'Dl Completed',
                  'Generating splits', 'Shuffling'):
    assert chatter not in log, chatter
  assert 'Preparing MNIST in ' in log and 'Reading MNIST from ' in log
  (workdir,) = (tmp_path / 'runs').iterdir()  # A workdir by default, named by config and time.
  assert re.fullmatch(r'mnist_fedprox-\d{8}-\d{6}', workdir.name)
  first, last = result.stderr.strip().splitlines()[0], result.stderr.strip().splitlines()[-1]
  assert f'Results go to runs/{workdir.name}' in first
  assert (f'Results in runs/{workdir.name}: metrics.jsonl, summary.json, checkpoints/. Plot them: '
          f'python -m fedprox_jax.plot --run runs/{workdir.name}. The process took ') in last
  assert len((workdir / 'metrics.jsonl').read_text().splitlines()) == 3


@pytest.mark.slow
def test_an_empty_workdir_flag_saves_nothing_and_says_so(tmp_path):
  result = run_module('--config=synthetic',
                      *SMALL,
                      '--config.num_rounds=2',
                      '--workdir=',
                      cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert 'Nothing is saved (--workdir=)' in lines[0] and 'Nothing was saved' in lines[-1]
  assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_presets_by_name_from_another_directory(tmp_path):
  run = run_module('--config=synthetic:iid', *SMALL, '--config.num_rounds=2', cwd=tmp_path)
  assert run.returncode == 0, run.stderr[-3000:]
  (workdir,) = (tmp_path / 'runs').iterdir()
  assert workdir.name.startswith('synthetic-iid-')
  assert json.loads((workdir / 'config.json').read_text())['data']['iid'] is True
  sweep = run_module('--config=synthetic',
                     '--sweep=synthetic:iid',
                     '--sweep.repeats=1',
                     *SMALL,
                     '--config.num_rounds=2',
                     f'--workdir={tmp_path / "sweep"}',
                     cwd=tmp_path,
                     module='fedprox_jax.sweep')
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  assert (tmp_path / 'sweep' / 'results.csv').is_file()


@pytest.mark.slow
def test_a_run_that_fails_before_computing_leaves_no_workdir(tmp_path):
  env = subprocess_env(FEDPROX_JAX_MNIST_DIR=str(tmp_path / 'no_mnist_here'))
  fresh, existing = tmp_path / 'fresh', tmp_path / 'existing'
  existing.mkdir()
  for workdir in (fresh, existing):
    result = run_module('--config=mnist_fedprox',
                        f'--config.data.cache_dir={tmp_path / "cache"}',
                        f'--workdir={workdir}',
                        env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith('error: MNIST file') and 'is missing' in lines[-1]
    assert not any(line.startswith('E1') and 'is missing' in line for line in lines)  # Once.
  assert not fresh.exists()  # Made by the run, so removed by it.
  assert existing.is_dir()  # The user's: kept.


@pytest.mark.slow
def test_a_default_workdir_claimed_by_a_run_that_never_started_is_removed(tmp_path):
  """The default workdir is made when it is chosen (so that runs started in the same second each
  get their own); a run refused before it began leaves neither it nor ./runs/."""
  result = run_module('--config=mnist_fedprox', '--config.algorithm.mu=-1', cwd=tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == 'error: config.algorithm.mu = -1.0 must be >= 0'
  assert not (tmp_path / 'runs').exists()


@pytest.mark.slow
def test_a_workdir_that_is_a_file_is_named_so(tmp_path):
  (tmp_path / 'taken').write_text('')
  result = run_module('--config=synthetic', f'--workdir={tmp_path / "taken"}')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --workdir {tmp_path / "taken"} is a file, not a directory: choose another path')


def test_a_runs_figure_gives_mu_a_panel_of_its_own(tmp_path):
  records = [{
      'round': r,
      'train/loss': 2.0 / (r + 1),
      'test/accuracy': r / 10,
      'mu': 1.0
  } for r in range(5)]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  png = plots.plot_run(str(tmp_path))
  assert plt.imread(png).shape[1] == round(3 * 4.6 * 120)  # Loss, accuracy and mu: 3 panels.


@pytest.mark.slow
def test_a_stopped_run_in_a_default_workdir_names_it_for_the_rerun(tmp_path):
  log = tmp_path / 'log'
  proc = start_module('--config=synthetic:1_1',
                      '--config.eval.dissimilarity=False',
                      '--config.num_rounds=2000',
                      cwd=tmp_path,
                      log=log)
  try:
    wait_until(lambda: 'round 20/2000' in log.read_text(), proc, log, 'round 20 logged')
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
  finally:
    stop(proc)
  (workdir,) = (tmp_path / 'runs').iterdir()
  last = log.read_text().strip().splitlines()[-1]
  assert f'rerun the same command with --workdir=runs/{workdir.name} to resume' in last, last
