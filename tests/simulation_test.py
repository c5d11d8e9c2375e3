"""Whole rounds through Simulation and rounds.run_rounds on the tiny federation."""
import dataclasses

import jax
import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax.engine import reference
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.settings import for_run
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.experiment.writers import RunWriter
from tests.conftest import tiny_config
from tests.conftest import tiny_data


def _final_params(config, data=None):
  sim = simulation(config, data or tiny_data(), [for_run(config)])
  server = sim.initial_server
  for r in range(1, config.num_rounds + 1):
    server, _ = sim.run_round(server, r)
  return server.params, sim


def _rounds_against_the_loop(config, data, loop_cohort):
  """Runs `config` round by round, each round held against the plain loop over
  loop_cohort(the round's cohort); returns the final params and the cohorts."""
  sim = simulation(config, data, [for_run(config)])
  loop = reference.make_reference_train_cohort(sim.apply_fn,
                                               learning_rate=config.client.learning_rate,
                                               weight_decay=config.client.weight_decay,
                                               batch_size=config.client.batch_size)
  server, cohorts = sim.initial_server, []
  for r in range(1, config.num_rounds + 1):
    cohort = jax.tree.map(np.asarray, sim.sample(r))
    want = loop(server.params, loop_cohort(cohort), np.zeros(1, np.float32), data.train_x,
                data.train_y, data.train_offsets, data.train_sizes)
    server, _ = sim.run_round(server, r)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), server.params,
                 want)
    cohorts.append(cohort)
  return server.params, cohorts


def test_fedavg_drops_stragglers_and_equals_fedprox_at_mu_zero_without_them():
  """FedAvg is FedProx's program with mu = 0 and stragglers dropped. Held against the plain loop
  (mu = 0): with stragglers, FedAvg's round is the loop over the non-stragglers alone (their
  weights zeroed here by hand, from the examples each client holds; that FedProx keeps their
  partial work is the next test's); with no stragglers the two are the same plain FedAvg."""
  data = tiny_data()
  fedavg = {'algorithm.name': 'fedavg', 'algorithm.mu': 0.0, 'algorithm.drop_stragglers': True}
  drop_by_hand = lambda c: c._replace(weights=np.where(c.stragglers, 0.0, data.train_sizes[
      c.clients]).astype(np.float32))
  _, cohorts = _rounds_against_the_loop(tiny_config(**fedavg, **{'stragglers.fraction': 0.5}), data,
                                        drop_by_hand)
  assert any(c.stragglers.any() for c in cohorts) and not all(c.stragglers.all() for c in cohorts)
  without = {'stragglers.fraction': 0.0}
  a, _ = _rounds_against_the_loop(tiny_config(**{
      'algorithm.mu': 0.0,
      **without
  }), data, lambda c: c)
  b, _ = _rounds_against_the_loop(tiny_config(**fedavg, **without), data, lambda c: c)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_mu_and_dropping_change_the_result_when_they_should():
  base, _ = _final_params(tiny_config(**{'stragglers.fraction': 0.5}))
  for change in ({'algorithm.mu': 0.0}, {'algorithm.drop_stragglers': True}):
    other, _ = _final_params(tiny_config(**{'stragglers.fraction': 0.5, **change}))
    assert not np.allclose(base['Dense_0']['kernel'], other['Dense_0']['kernel']), change


def test_same_config_same_results_other_seed_other_results():
  a, _ = _final_params(tiny_config())
  b, _ = _final_params(tiny_config())
  c, _ = _final_params(tiny_config(seed=1))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.allclose(a['Dense_0']['kernel'], c['Dense_0']['kernel'])


def test_rounds_of_different_cohorts_run_one_program_and_match_the_reference():
  """Cohorts that differ in client sizes, step counts and stragglers all go through the one
  compiled round program (compiled from shapes, before the first round), and each round equals
  the plain loop over the same cohort: nothing of one cohort is baked into the program."""
  config = tiny_config(num_rounds=6, **{'stragglers.fraction': 0.5, 'algorithm.mu': 0.3})
  data = tiny_data()
  sim = simulation(config, data, [for_run(config)])
  ref = reference.make_reference_train_cohort(sim.apply_fn,
                                              learning_rate=config.client.learning_rate,
                                              weight_decay=config.client.weight_decay,
                                              batch_size=config.client.batch_size)
  server, shapes = sim.initial_server, set()
  for r in range(1, config.num_rounds + 1):
    cohort = jax.tree.map(np.asarray, sim.sample(r))
    want = ref(server.params, cohort, np.asarray(sim.hp['mu']), data.train_x, data.train_y,
               data.train_offsets, data.train_sizes)
    server, _ = sim.run_round(server, r)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), server.params,
                 want)
    sizes = data.train_sizes[cohort.clients[0]]
    shapes.add((tuple(sizes), tuple(cohort.epochs[0]), int(cohort.stragglers[0].sum())))
  assert len(shapes) == config.num_rounds
  assert len({s[2] for s in shapes}) > 1  # Straggler counts differ between rounds...
  assert len({sum(np.array(s[0]) * np.array(s[1])) for s in shapes}) > 1  # ...and so does work.
  assert sim.traces == 1


def test_run_rounds_records_and_summary():
  config = tiny_config(num_rounds=4, eval_every=3)
  sim = simulation(config, tiny_data(), [for_run(config)])
  writer = RunWriter(None, config)
  progress = rounds.run_rounds(sim, config, [writer], ['fedprox'])
  assert [r['round'] for r in writer.records] == [0, 3, 4]
  for key in ('train/loss', 'train/accuracy', 'local_test/accuracy', 'test/accuracy', 'test/loss'):
    assert key in writer.records[-1]
  assert writer.records[-1]['train/loss'] < writer.records[0]['train/loss']
  summary = rounds.summarize(writer.records, progress)
  assert 0 < summary['program']['real_work_share'] <= 1
  assert len(progress['round_times']) == 4 and summary['program']['real_steps'] > 0


def test_divergence_names_the_round():
  config = tiny_config(**{'client.learning_rate': 1e12, 'algorithm.mu': 0.0})
  sim = simulation(config, tiny_data(), [for_run(config)])
  with pytest.raises(errors.NonFiniteError, match=r'round \d+: .*non-finite'):
    rounds.run_rounds(sim, config, [RunWriter(None, config)], ['fedprox'])


@pytest.mark.parametrize('field, value, message', [
    ('clients_per_round', 2000, 'clients_per_round = 2000 exceeds data.num_clients'),
    ('algorithm.mu', -1.0, 'algorithm.mu = -1.0 must be >= 0'),
    ('stragglers.fraction', 1.5, 'stragglers.fraction = 1.5 must be in'),
    ('model.name', 'resnet', "model.name = 'resnet' is not one of"),
    ('data.name', 'cifar', "data.name = 'cifar' is not one of"),
    ('client.local_epochs', 0, 'client.local_epochs = 0 must be >= 1'),
    ('client.learning_rate', 0.0, 'client.learning_rate = 0.0 must be > 0'),
    ('client.batch_size', 0, 'client.batch_size = 0 must be >= 1'),
    ('stragglers.mode', 'sometimes', "stragglers.mode = 'sometimes' is not one of"),
    ('num_rounds', 0, r'num_rounds = 0 must be in \[1, 100000000\]'),
    ('num_rounds', 10**23, r'num_rounds = 100000000000000000000000 must be in \[1, 100000000\]'),
])
def test_invalid_configs_name_the_field(field, value, message):
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(tiny_config(**{field: value}))


def test_default_configs_are_valid():
  from fedprox_jax.configs import mnist_fedavg  # pylint: disable=g-import-not-at-top
  from fedprox_jax.configs import mnist_fedprox  # pylint: disable=g-import-not-at-top
  from fedprox_jax.configs import mnist_paper  # pylint: disable=g-import-not-at-top
  for module in (mnist_fedprox, mnist_fedavg, mnist_paper):
    validation.validate(module.get_config())


def test_raw_uint8_features_equal_their_normalised_float_copy():
  """Data stay raw on the device and the model normalises them: same training, same metrics as
  normalising up front; evaluation in small chunks (the last one shifted back) equals one chunk."""
  base = tiny_data()
  to_raw = lambda x: np.clip(np.round(x * 30 + 128), 0, 255).astype(np.uint8)
  mean = np.linspace(120, 136, base.input_dim).astype(np.float32)
  scale = np.float32(30.0)
  raw = dataclasses.replace(base,
                            train_x=to_raw(base.train_x),
                            local_test_x=to_raw(base.local_test_x),
                            test_x=to_raw(base.test_x),
                            feature_mean=mean,
                            feature_scale=scale)
  normalised = dataclasses.replace(
      base, **{
          k: (getattr(raw, k).astype(np.float32) - mean) / scale
          for k in ('train_x', 'local_test_x', 'test_x')
      })
  params_raw, sim_raw = _final_params(tiny_config(**{'eval.chunk_size': 7}), raw)
  params_float, sim_float = _final_params(tiny_config(**{'eval.chunk_size': 10_000}), normalised)
  assert sim_raw.client_data.x.dtype == np.uint8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params_raw, params_float)
  got, want = sim_raw.evaluate(params_raw), sim_float.evaluate(params_float)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
