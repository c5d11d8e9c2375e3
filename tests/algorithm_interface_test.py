"""Adding an algorithm takes one definition and no edit in the package: a toy algorithm defined
here, with hyperparameters of its own, registered at test time, gets its config field, its
validation, its results.csv column, a traced per-run value in sweeps (one program for every value)
or one program per value (a hyperparameter that is not per run), and workdirs made before it
existed resume."""
import csv

import jax
import ml_collections
import numpy as np
import pytest

from fedprox_jax import algorithms
from fedprox_jax import experiment
from fedprox_jax.algorithms import base
from fedprox_jax.engine import client_states
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import chunks
from fedprox_jax.experiment import grid
from fedprox_jax.experiment import validation
from fedprox_jax.experiment import workdir
from tests.runs import small_config


def _server_delta(totals, state, hp):
  """FedAvg's mean delta, scaled by toy_scale, and halved where toy_halve (a fixed value)."""
  scale = hp['toy_scale'] * (0.5 if hp['toy_halve'] else 1.0)
  return jax.tree.map(lambda d: scale * d, base.mean(totals.sums['delta'], totals.weight)), state


TOY = base.Algorithm(name='toy',
                     init_state=base.no_state,
                     upload=base.delta_upload,
                     server_delta=_server_delta,
                     hyperparameters=(
                         base.Hyperparameter('toy_scale', 1.0, lambda v: v > 0, 'must be > 0',
                                             'Scales Delta.'),
                         base.Hyperparameter('toy_halve',
                                             False,
                                             lambda v: True,
                                             'must be True or False',
                                             'Halves Delta (a Python value of the program).',
                                             per_run=False),
                     ))


@pytest.fixture(name='toy')
def _toy():
  with algorithms.registered(TOY):
    yield


def _config(**over):
  return small_config(**{'algorithm.name': 'toy', 'algorithm.mu': 0.0, 'num_rounds': 3, **over})


def test_its_hyperparameters_become_validated_config_fields(toy):
  c = _config(**{'algorithm.toy_scale': 0.5})  # A field of the config: it can be set.
  validation.validate(c)
  with pytest.raises(ConfigError, match=r'config.algorithm.toy_scale = -1.0 must be > 0'):
    validation.validate(_config(**{'algorithm.toy_scale': -1.0}))
  # Another algorithm's run that sets it is told that it is not read, and by whom it is.
  other = small_config(**{'algorithm.toy_scale': 2.0})
  assert 'algorithm.toy_scale' in validation.unused_fields(other)
  assert algorithms.readers('toy_scale') == ['toy']
  # Registering another algorithm that declares the same name differently is refused.
  clash = TOY._replace(name='toy2', hyperparameters=(TOY.hyperparameters[0]._replace(default=2.0),))
  with pytest.raises(ValueError, match='both declare'):
    algorithms.register(clash)
  assert 'toy2' not in algorithms.ALGORITHMS


def test_it_runs_and_its_own_value_changes_the_run(toy):
  plain = experiment.train_and_evaluate(_config())
  scaled = experiment.train_and_evaluate(_config(**{'algorithm.toy_scale': 0.5}))
  halved = experiment.train_and_evaluate(_config(**{'algorithm.toy_halve': True}))
  loss = lambda records: [r['train/loss'] for r in records]
  assert loss(plain) != loss(scaled)
  np.testing.assert_allclose(loss(scaled), loss(halved), rtol=1e-5)  # Both halve every Delta.


def test_a_sweep_varies_it_traced_or_by_program_and_records_it(toy, tmp_path):
  sweep = ml_collections.ConfigDict({
      'repeats': 1,
      'arms': {
          'toy': {
              'grid': {
                  'algorithm': {
                      'toy_scale': [1.0, 0.5]
                  }
              }
          },
          'halved': {
              'algorithm': {
                  'toy_halve': True
              }
          }
      }
  })
  base_config = _config()
  runs = grid.expand(base_config, sweep)
  programs = chunks.split(runs, 0)
  # toy_scale is traced: both of its values share one program; toy_halve makes another.
  assert sorted(len(c.runs) for c in programs) == [1, 2]
  results = experiment.run_sweep(base_config, sweep, str(tmp_path))
  by_name = {name: records[-1]['train/loss'] for name, records in results.items()}
  np.testing.assert_allclose(by_name['toy-toy_scale0.5-seed0'], by_name['halved-seed0'], rtol=1e-5)
  assert by_name['toy-toy_scale1.0-seed0'] != by_name['halved-seed0']
  with open(tmp_path / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert {(r['run'], r['toy_scale'], r['toy_halve']) for r in rows} == {
      ('toy-toy_scale1.0-seed0', '1.0', 'False'), ('toy-toy_scale0.5-seed0', '0.5', 'False'),
      ('halved-seed0', '1.0', 'True')
  }


def test_a_workdir_made_before_it_existed_resumes(toy):
  """config.json of a release without the toy's fields: the fields at their defaults are the
  same config, other values are another config."""
  c = small_config(num_rounds=3)
  old = c.to_dict()
  for name in ('toy_scale', 'toy_halve'):
    del old['algorithm'][name]
  assert workdir.config_differences(old, c.to_dict()) == []
  c.algorithm.toy_scale = 2.0
  assert workdir.config_differences(old, c.to_dict()) == ['algorithm.toy_scale: 1.0 -> 2.0']
  assert workdir.added_fields()['algorithm.toy_scale'] == 1.0


@pytest.mark.parametrize('declared, problem', [
    (base.Hyperparameter('mu', 0.0, lambda v: True, '', ''), "'mu' would take the place"),
    (base.Hyperparameter('seed', 0, lambda v: True, '', ''), "'seed' would take the place"),
    (base.Hyperparameter('toy_mode', 'a', lambda v: True, '', ''), 'declare it per_run=False'),
])
def test_a_hyperparameter_that_would_clash_or_cannot_be_traced_is_refused(declared, problem):
  with algorithms.registered(TOY._replace(name='clash', hyperparameters=(declared,))):
    with pytest.raises(TypeError, match=f'algorithm clash: its hyperparameter .*{problem}'):
      validation.check_declarations()


def test_client_states_start_from_what_init_client_state_gives():
  """Not zeros alone: an algorithm whose clients start from, say, the initial model gets that."""
  from_model = TOY._replace(name='toy_state', init_client_state=lambda params: params)
  params = {'w': np.arange(6, dtype=np.float32).reshape(2, 3)}  # Two runs.
  store = client_states.ClientStates(from_model, params, num_clients=4, replicated=None)
  np.testing.assert_array_equal(store.get()['w'], np.repeat(params['w'][:, None], 4, 1))


def test_a_paper_server_step_under_another_server_optimizer_is_called_a_variant(caplog):
  c = small_config(**{'algorithm.name': 'feddyn', 'algorithm.mu': 0.0})
  validation.warn_unused(c)
  assert 'variant' not in caplog.text
  c.server.optimizer = 'momentum'
  validation.warn_unused(c)
  assert 'the run is feddyn with server optimizer momentum at rate 0.03: its paper applies its ' \
      'server step as it is (sgd at rate 1), so this is a variant of it' in caplog.text
