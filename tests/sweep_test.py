"""Sweeps: the grid, single run == the same run inside a sweep, the CLI, TensorBoard, plots."""
import csv
import json
import struct

import ml_collections
import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax import plots
from fedprox_jax.configs.sweeps import mnist_figure
from fedprox_jax.experiment import grid as sweeps
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.experiment.writers import RunWriter
from tests.commands import mnist_data_flags
from tests.commands import run_module
from tests.conftest import settings
from tests.conftest import tiny_config
from tests.conftest import tiny_data


def test_the_figure_grid_has_45_distinct_valid_runs():
  runs = sweeps.expand(tiny_config(), mnist_figure.get_config())
  assert len(runs) == 45 and len({run.name for run in runs}) == 45
  by_name = {run.name: run.config for run in runs}
  fedavg = by_name['fedavg-fraction0.9-seed4']
  assert fedavg.algorithm.drop_stragglers and fedavg.algorithm.mu == 0.0 and fedavg.seed == 4
  assert by_name['fedprox_mu2-fraction0.5-seed0'].algorithm.mu == 2.0
  assert by_name['fedprox_mu2-fraction0.5-seed0'].stragglers.fraction == 0.5


def test_a_sweep_cannot_vary_what_the_program_shares():
  sweep = mnist_figure.get_config()
  sweep.grid = ml_collections.ConfigDict({'client': {'batch_size': [10, 20]}})
  with pytest.raises(errors.ConfigError, match='client.batch_size cannot vary'):
    sweeps.expand(tiny_config(), sweep)


def _records_of_runs(config, runs):
  sim = simulation(config, tiny_data(), runs)
  writers = [RunWriter(None, config) for _ in runs]
  rounds.run_rounds(sim, config, writers, [str(i) for i in range(len(runs))])
  return [w.records for w in writers]


def test_a_run_alone_equals_the_same_run_inside_a_sweep():
  config = tiny_config(num_rounds=4, **{'stragglers.fraction': 0.5, 'algorithm.mu': 0.3})
  alone = _records_of_runs(config, [settings(config)])[0]
  others = [
      settings(config,
               seed=7,
               **{
                   'algorithm.mu': 0.0,
                   'algorithm.drop_stragglers': True,
                   'client.learning_rate': 0.05
               }),
      settings(config,
               seed=3,
               **{
                   'stragglers.fraction': 0.9,
                   'stragglers.mode': 'fixed',
                   'server.learning_rate': 0.5
               })
  ]
  inside = _records_of_runs(config, [others[0], settings(config), others[1]])[1]
  assert len(alone) == len(inside) == 5
  for a, b in zip(alone, inside):
    for key, value in a.items():
      if not key.startswith('time/'):
        np.testing.assert_allclose(b[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def _read_scalar_tags(path):
  """Tags of a TensorBoard event file (TFRecord framing of Event protos), read by hand."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  tags, data = set(), path.read_bytes()
  while data:
    (length,) = struct.unpack('<Q', data[:8])
    event = event_pb2.Event.FromString(data[12:12 + length])
    tags |= {v.tag for v in event.summary.value}
    data = data[12 + length + 4:]
  return tags


@pytest.mark.slow
def test_sweep_cli_writes_runs_table_tensorboard_and_plots(mnist_env, tmp_path):
  env, root = mnist_env
  sweep_file = tmp_path / 'tiny_sweep.py'
  sweep_file.write_text(
      'import ml_collections\n'
      'def get_config():\n'
      '  s = ml_collections.ConfigDict()\n'
      '  s.repeats = 1\n'
      '  s.arms = ml_collections.ConfigDict({"fedavg": {"algorithm": {"name": "fedavg", '
      '"mu": 0.0, "drop_stragglers": True}}, "fedprox": {"algorithm": {"mu": 0.0}}})\n'
      '  s.grid = ml_collections.ConfigDict({"stragglers": {"fraction": [0.0, 0.9]}})\n'
      '  s.max_runs_per_chunk = 3\n'
      '  s.cpu_devices = 1\n'
      '  return s\n')
  workdir = tmp_path / 'sweep'
  result = run_module('--config=configs/mnist_fedprox.py',
                      f'--sweep={sweep_file}',
                      f'--workdir={workdir}',
                      '--config.num_rounds=2',
                      '--config.data.num_clients=100',
                      '--config.clients_per_round=5',
                      '--config.client.local_epochs=2',
                      *mnist_data_flags(root),
                      module='fedprox_jax.sweep',
                      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  # FedAvg and FedProx share a program; 3 runs at most per chunk make it two.
  assert 'Sweep of 4 runs in 2 programs' in result.stderr
  names = sorted(p.name for p in (workdir / 'runs').iterdir())
  assert names == [
      'fedavg-fraction0.0-seed0', 'fedavg-fraction0.9-seed0', 'fedprox-fraction0.0-seed0',
      'fedprox-fraction0.9-seed0'
  ]
  with open(workdir / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 3  # Rounds 0, 1, 2 of each run.
  assert {r['algorithm'] for r in rows} == {'fedavg', 'fedprox'}
  for name in names:
    lines = (workdir / 'runs' / name / 'metrics.jsonl').read_text().splitlines()
    records = [json.loads(line) for line in lines]
    csv_rows = [r for r in rows if r['run'] == name]
    assert [float(r['test/accuracy']) for r in csv_rows] == [r['test/accuracy'] for r in records]
    events = list((workdir / 'runs' / name).glob('events.out.tfevents.*'))
    assert len(events) == 1
    assert {'train/loss', 'test/accuracy'} <= _read_scalar_tags(events[0])
  # Without stragglers FedAvg is FedProx with mu = 0: the same seed gives the same run, at every
  # round; with 90% stragglers, dropping them changes it (rounds 1 and 2 differ).
  by_run = lambda name: [r['train/loss'] for r in rows if r['run'] == name]
  assert by_run('fedavg-fraction0.0-seed0') == by_run('fedprox-fraction0.0-seed0')
  assert by_run('fedavg-fraction0.9-seed0')[1:] != by_run('fedprox-fraction0.9-seed0')[1:]

  paths = plots.plot_sweep(str(workdir))
  assert all(p.stat().st_size > 10_000 for p in paths)
  table = plots.final_table(rows)
  assert table.splitlines()[0] == '| stragglers | fedavg | fedprox |'
  assert len(table.splitlines()) == 4
  run_png = plots.plot_run(str(workdir / 'runs' / names[0]))
  assert run_png.stat().st_size > 10_000


@pytest.mark.slow
def test_a_sweep_of_algorithms_and_optimizers_writes_one_table(tmp_path, caplog):
  from tests.runs import small_config  # pylint: disable=g-import-not-at-top
  caplog.set_level('INFO')
  sweep = ml_collections.ConfigDict({
      'repeats': 1,
      'max_runs_per_chunk': 0,
      'cpu_devices': 0,
      'grid': {
          'stragglers': {
              'fraction': [0.0, 0.5]
          }
      },
      'arms': {
          'fed-prox': {
              'algorithm': {
                  'name': 'fedprox'
              }
          },  # Names are kept as written.
          'fedavg': {
              'algorithm': {
                  'name': 'fedavg',
                  'mu': 0.0,
                  'drop_stragglers': True
              }
          },
          'scaffold+adam': {
              'algorithm': {
                  'name': 'scaffold',
                  'mu': 0.0
              },
              'server': {
                  'optimizer': 'adam',
                  'learning_rate': 0.01
              }
          },
          'fednova': {
              'algorithm': {
                  'name': 'fednova'
              },
              'grid': {
                  'client': {
                      'learning_rate': [0.003, 0.01]
                  }
              }
          },
      }
  })
  records = experiment.run_sweep(small_config(num_rounds=3), sweep, str(tmp_path))
  assert len(records) == 2 + 2 + 2 + 4
  # FedAvg and FedProx share a program; FedNova and SCAFFOLD + Adam get one each.
  assert 'Sweep of 10 runs in 3 programs' in caplog.text
  with open(tmp_path / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 10 * 4
  assert {r['arm'] for r in rows} == {'fed-prox', 'fedavg', 'scaffold+adam', 'fednova'}
  by_arm = {r['arm']: r for r in rows}
  assert by_arm['scaffold+adam']['algorithm'] == 'scaffold'
  assert by_arm['scaffold+adam']['server_optimizer'] == 'adam'
  assert float(by_arm['scaffold+adam']['server_learning_rate']) == 0.01
  assert float(by_arm['fedavg']['server_learning_rate']) == 1.0  # sgd's default.
  assert {float(r['learning_rate']) for r in rows if r['arm'] == 'fednova'} == {0.003, 0.01}
