"""The metrics log against the checkpoint, finished runs, round counts, one process per workdir,
and the faults of a careful user. In-process runs on a small synthetic task."""
import json
import logging
import os
import subprocess
import sys

import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.experiment import workdir as workdir_lib
from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.runs import copy_run
from tests.runs import make_undisturbed
from tests.runs import records
from tests.runs import small_config

pytestmark = pytest.mark.slow  # Every test runs the command line or whole runs.


@pytest.fixture(scope='module')
def undisturbed(tmp_path_factory):
  """A whole 12-round run: what every disturbed run must end equal to."""
  return make_undisturbed(tmp_path_factory)


# The metrics log against the checkpoint.


def test_a_partial_last_line_is_dropped_and_the_round_written_again(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"round": 13, "train/lo')  # A run killed while writing round 13.
  longer = tmp_path / 'longer'
  experiment.train_and_evaluate(small_config(num_rounds=16), str(longer))
  experiment.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert records(run) == records(longer)


@pytest.mark.parametrize('cut, rounds', [((3, 6), 'records of rounds 3-5'),
                                         ((0, 13), 'records of rounds 0-12'),
                                         ((0, 1), 'record of round 0')])
def test_a_log_missing_records_before_the_checkpoint_is_refused(undisturbed, tmp_path, cut, rounds):
  run = copy_run(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  log.write_text(''.join(lines[:cut[0]] + lines[cut[1]:]))
  before = log.read_text()
  with pytest.raises(errors.LogError,
                     match=f'lacks the {rounds} \\(every record up to the checkpoint of '
                     'round 12 must be there\\).*--overwrite'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))
  assert log.read_text() == before  # Refused before anything was written.
  experiment.train_and_evaluate(small_config(num_rounds=16), str(run), overwrite=True)
  assert [r['round'] for r in records(run)] == list(range(17))


def test_a_deleted_log_is_refused(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  (run / 'metrics.jsonl').unlink()
  with pytest.raises(errors.LogError, match='lacks the records of rounds 0-12'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


def test_a_garbled_line_is_refused_by_number(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  log = run / 'metrics.jsonl'
  lines = log.read_text().splitlines(keepends=True)
  lines[4] = 'not json\n'
  log.write_text(''.join(lines))
  with pytest.raises(errors.LogError, match='line 5 is not a metrics record'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


# Finished runs, resumed summaries, round counts.


def test_rerunning_a_finished_run_changes_nothing(undisturbed, tmp_path, caplog):
  run = copy_run(undisturbed, tmp_path)
  files = {
      p: (p.read_bytes(), p.stat().st_mtime_ns)
      for p in run.rglob('*')
      if p.is_file() and p.name != workdir_lib.LOCK_NAME
  }
  caplog.set_level(logging.INFO)
  got = experiment.train_and_evaluate(small_config(), str(run))
  assert 'is complete (round 12 of 12): nothing to do' in caplog.text
  assert [r['round'] for r in got] == list(range(13))
  after = {
      p: (p.read_bytes(), p.stat().st_mtime_ns)
      for p in run.rglob('*')
      if p.is_file() and p.name != workdir_lib.LOCK_NAME
  }
  assert after == files


def test_a_finished_run_missing_its_summary_gets_it_back(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  (run / 'summary.json').unlink()
  experiment.train_and_evaluate(small_config(), str(run))
  assert json.loads((run / 'summary.json').read_text()) == json.loads(
      (undisturbed / 'summary.json').read_text())


def test_a_resumed_run_summary_covers_all_its_rounds(undisturbed, tmp_path):
  run = tmp_path / 'run'
  experiment.train_and_evaluate(small_config(num_rounds=8), str(run))
  experiment.train_and_evaluate(small_config(), str(run))
  whole = json.loads((undisturbed / 'summary.json').read_text())['program']
  resumed = json.loads((run / 'summary.json').read_text())['program']
  assert resumed['real_steps'] == whole['real_steps'] > 0
  assert resumed['executed_steps'] == whole['executed_steps']
  assert resumed['wall_s'] > 0 and resumed['median_round_s'] > 0


def test_fewer_rounds_than_a_workdir_has_done_are_refused(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  config_json = (run / 'config.json').read_text()
  with pytest.raises(errors.ConfigError,
                     match=r'num_rounds = 8 is below the 12 rounds that the run'):
    experiment.train_and_evaluate(small_config(num_rounds=8), str(run))
  assert (run / 'config.json').read_text() == config_json


# One process per workdir.


def test_a_busy_workdir_is_refused_naming_its_holder(tmp_path):
  run = tmp_path / 'run'
  with workdir_lib.WorkdirLock(str(run)):
    with pytest.raises(workdir_lib.WorkdirBusy,
                       match=f'--workdir {run} is in use by another run '
                       f'\\(pid {os.getpid()}\\)'):
      experiment.train_and_evaluate(small_config(), str(run))
    sweep = synthetic_sweep()
    with pytest.raises(workdir_lib.WorkdirBusy, match='is in use by another run'):
      experiment.run_sweep(small_config(), sweep, str(run))
  assert not (run / 'metrics.jsonl').exists()
  experiment.train_and_evaluate(small_config(), str(run))  # Free again once the holder is gone.


def synthetic_sweep():
  from fedprox_jax.configs.sweeps import synthetic as synthetic_sweeps  # pylint: disable=g-import-not-at-top
  sweep = synthetic_sweeps.get_config('1_1')
  sweep.repeats = 1
  return sweep


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  run = tmp_path / 'run'
  code = ('import sys, time; from fedprox_jax.experiment.workdir import WorkdirLock\n'
          f'lock = WorkdirLock({str(run)!r}).__enter__(); print("held", flush=True)\n'
          'time.sleep(600)\n')
  holder = subprocess.Popen([sys.executable, '-c', code],
                            cwd=REPO,
                            env=subprocess_env(),
                            stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(workdir_lib.WorkdirBusy, match=f'pid {holder.pid}'):
      with workdir_lib.WorkdirLock(str(run)):
        pass
  finally:
    holder.kill()
    holder.communicate()  # Reaps it and closes its stdout pipe.
  with workdir_lib.WorkdirLock(str(run)):  # The kernel released it with the process.
    assert (run / workdir_lib.LOCK_NAME).read_text() == f'{os.getpid()}\n'


# What a careful user's faults found: each stops in one line, or ends as the undisturbed run.


def test_a_run_without_its_config_json_is_refused(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  (run / 'config.json').unlink()
  with pytest.raises(errors.ConfigError, match='holds metrics.jsonl but no config.json: restore'):
    experiment.train_and_evaluate(small_config(**{'algorithm.mu': 0.0}), str(run))
  assert not (run / 'config.json').exists()


@pytest.mark.parametrize('content', ['[1, 2]', 'null', '{"algorithm": '])
def test_a_config_json_that_is_not_a_config_is_refused(undisturbed, tmp_path, content):
  run = copy_run(undisturbed, tmp_path)
  (run / 'config.json').write_text(content)
  with pytest.raises(errors.ConfigError, match='config.json cannot be read'):
    experiment.train_and_evaluate(small_config(), str(run))


def test_a_sweeps_run_directory_is_not_a_workdir(tmp_path):
  sweep = synthetic_sweep()
  sweep.arms = {'mu1': {'algorithm': {'mu': 1.0}}}
  experiment.run_sweep(small_config(num_rounds=2), sweep, str(tmp_path / 'sweep'))
  with pytest.raises(errors.ConfigError, match='is a run of the sweep in'):
    experiment.train_and_evaluate(small_config(num_rounds=2),
                                  str(tmp_path / 'sweep' / 'runs' / 'mu1-seed0'))


def test_a_log_round_beyond_floats_is_a_garbled_line(undisturbed, tmp_path):
  run = copy_run(undisturbed, tmp_path)
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"round": 1e999}\n')
  with pytest.raises(errors.LogError, match='line 14 is not a metrics record'):
    experiment.train_and_evaluate(small_config(num_rounds=16), str(run))


def test_overwrite_deletes_only_what_runs_wrote(tmp_path):
  precious = tmp_path / 'thesis.tex'
  precious.write_text('years of work')
  with pytest.raises(errors.ConfigError,
                     match='--overwrite would delete .*thesis.tex, which no '
                     'run wrote'):
    experiment.train_and_evaluate(small_config(num_rounds=2), str(tmp_path), overwrite=True)
  assert precious.read_text() == 'years of work'


def test_extending_a_run_keeps_the_records_of_an_undisturbed_longer_run(tmp_path):
  short, whole = tmp_path / 'short', tmp_path / 'whole'
  experiment.train_and_evaluate(small_config(num_rounds=10, eval_every=3), str(short))
  assert [r['round'] for r in records(short)][-1] == 10  # The last round is always recorded.
  experiment.train_and_evaluate(small_config(num_rounds=12, eval_every=3), str(short))
  experiment.train_and_evaluate(small_config(num_rounds=12, eval_every=3), str(whole))
  assert records(short) == records(whole)  # Round 10's record went with the extension.
