"""Sweep configs that would misplace, drop or mislabel runs are refused or labelled right; the plot
command's own errors; stops asked for while a record is written wait for it."""
import json
import signal
import subprocess
import sys

import ml_collections
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax import plots
from fedprox_jax import signals
from fedprox_jax.experiment import grid as sweeps
from tests.conftest import REPO
from tests.conftest import subprocess_env
from tests.runs import small_config


def _sweep(arms, grid=None, repeats=1):
  return ml_collections.ConfigDict({'repeats': repeats, 'arms': arms, 'grid': grid or {}})


@pytest.mark.parametrize('arm',
                         ['/tmp/victim', 'a/b', 'x\ny', '-rf', '', 'über'])  # (Dots: ConfigDict.)
@pytest.mark.slow
def test_arm_names_that_would_leave_runs_are_refused(arm, tmp_path):
  with pytest.raises(errors.ConfigError, match='an arm name names directories'):
    experiment.run_sweep(small_config(), _sweep({arm: {}}), str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()


def test_arms_that_differ_only_by_case_are_refused():
  with pytest.raises(errors.ConfigError, match='same name but for case'):
    sweeps.expand(small_config(), _sweep({'FedAvg': {}, 'fedavg': {}}))


@pytest.mark.parametrize('arm, grid, message', [
    ({
        'grid': {
            'stragglers': {
                'fraction': [0.1]
            }
        }
    }, {
        'stragglers': {
            'fraction': [0.0]
        }
    }, 'stragglers.fraction is set both by its grid and by sweep.grid'),
    ({
        'algorithm': {
            'name': 'scaffold'
        },
        'grid': {
            'algorithm': {
                'name': ['fednova']
            }
        }
    }, None, 'algorithm.name is set both by its grid and by the arm itself'),
    ({
        'stragglers': {
            'fraction': 0.5
        }
    }, {
        'stragglers': {
            'fraction': [0.0]
        }
    }, 'stragglers.fraction is set both by the arm and by sweep.grid'),
])
def test_a_field_set_twice_is_refused(arm, grid, message):
  with pytest.raises(errors.ConfigError, match=message):
    sweeps.expand(small_config(), _sweep({'b': arm}, grid))


@pytest.mark.parametrize('arm, grid', [({
    'seed': 5
}, None), ({
    'grid': {
        'seed': [5, 6]
    }
}, None), ({}, {
    'seed': [5, 6]
})],
                         ids=['arm', 'arm grid', 'sweep grid'])
def test_a_seed_set_by_the_sweep_is_refused_with_a_pointer_to_repeats(arm, grid):
  """Runs are seeded base seed + repeat: a seed in an arm or a grid would be overwritten while the
  run names said otherwise (a-seed5-seed0 and a-seed6-seed0 both ran seed 0)."""
  with pytest.raises(errors.ConfigError, match='sets seed, which a sweep chooses.*sweep.repeats'):
    sweeps.expand(small_config(), _sweep({'a': arm}, grid))


def test_a_grid_value_of_the_wrong_type_is_one_line():
  with pytest.raises(errors.ConfigError,
                     match=r"sweep run a-muabc-seed0: algorithm.mu = 'abc' is a str, where the "
                     r'config holds a float'):
    sweeps.expand(small_config(), _sweep({'a': {}}, {'algorithm': {'mu': ['abc']}}))


@pytest.mark.slow
def test_a_run_name_over_255_bytes_is_refused(tmp_path):
  arm = 'a' * 250
  with pytest.raises(errors.ConfigError, match='its directory name would be 2.. bytes'):
    experiment.run_sweep(small_config(), _sweep({arm: {}}, {'algorithm': {
        'mu': [0.0]
    }}), str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()


@pytest.mark.slow
def test_a_workdir_name_over_255_bytes_is_one_line(tmp_path):
  for workdir in (tmp_path / ('w' * 300), tmp_path / ('w' * 300) / 'run'):
    with pytest.raises(errors.ConfigError, match='a file or directory name takes at most 255'):
      experiment.train_and_evaluate(small_config(), str(workdir))
    with pytest.raises(errors.ConfigError, match='a file or directory name takes at most 255'):
      experiment.run_sweep(small_config(), _sweep({'a': {}}), str(workdir))


@pytest.mark.slow
def test_optional_sweep_fields_default_and_arm_grids_make_their_own_lines(tmp_path):
  sweep = _sweep(
      {
          'opt': {
              'grid': {
                  'server': {
                      'optimizer': ['sgd', 'adam']
                  }
              }
          },
          'nova': {
              'algorithm': {
                  'name': 'fednova'
              }
          }
      },
      grid={'stragglers': {
          'fraction': [0.0, 0.5]
      }},
      repeats=2)
  experiment.run_sweep(small_config(num_rounds=2), sweep, str(tmp_path))
  rows = plots.read_table(tmp_path / 'results.csv')
  table = plots.final_table(rows, 'local_test/accuracy')
  assert set(table.splitlines()[0].strip('| ').split(' | ')[1:]) == {
      'nova', 'opt-optimizersgd', 'opt-optimizeradam'
  }
  runs = plots.curves(rows, 'local_test/accuracy')
  assert {
      key: value[3] for key, value in runs.items()
  } == {  # 2 seeds each, nothing pooled.
      (series, fraction): 2 for series in ('nova', 'opt-optimizersgd', 'opt-optimizeradam')
      for fraction in (0.0, 0.5)
  }


@pytest.mark.slow
def test_infinite_metrics_of_a_finite_model_stop_the_run():
  config = small_config(**{'server.optimizer': 'yogi', 'server.learning_rate': 1e38})
  with pytest.raises(errors.NonFiniteError, match='the .*loss of run .* became non-finite'):
    experiment.train_and_evaluate(config)


def _plot(*args):
  return subprocess.run([sys.executable, '-m', 'fedprox_jax.plot', *args],
                        cwd=REPO,
                        env=subprocess_env(),
                        capture_output=True,
                        text=True,
                        timeout=300)


@pytest.mark.slow
def test_the_plot_command_says_what_is_wrong_in_one_line(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'metrics.jsonl').write_text(json.dumps({'round': 0, 'train/loss': 1.0}) + '\n{"rou')
  sweep = tmp_path / 'sweep'
  sweep.mkdir()
  (sweep / 'results.csv').write_text('run,arm,stragglers,round\nx,a,0.0')
  for args, message in (([str(run)], 'is a run\'s directory: add --run'),
                        (['--run', str(sweep)], 'is a sweep\'s directory: leave out --run'),
                        (['--run', str(run)], 'metrics.jsonl line 2 is not a metrics record'),
                        ([str(sweep)], 'results.csv is not a whole results table')):
    result = _plot(*args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert message in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_stop_asked_for_while_a_record_is_written_waits_for_it():
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  signals.install()
  try:
    written = []
    with pytest.raises(KeyboardInterrupt):
      with signals.deferred():
        signal.raise_signal(signal.SIGTERM)
        written.append('record')  # Still runs: the stop waits for the block's end.
    assert written == ['record'] and signals.stopped_by() == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
      signals.check()  # A request not acted on is acted on at the next round.
  finally:
    signals._requested.clear()  # pylint: disable=protected-access
    for signum, handler in previous.items():
      signal.signal(signum, handler)
