"""Whole simulations of every algorithm: exact equivalences between them, SCAFFOLD's client states
on the device and on the host against the reference, and the server optimizers' rules."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax import experiment
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.engine import client_states
from fedprox_jax.engine import machine
from fedprox_jax.engine import memory_estimate
from fedprox_jax.engine import reference
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.checkpoints import Restored
from fedprox_jax.experiment.settings import simulation
from fedprox_jax.tasks import data_plan
from tests.conftest import settings
from tests.conftest import tiny_config
from tests.conftest import tiny_data
from tests.conftest import with_changes
from tests.runs import small_config


def _rounds(config, data, num_rounds=3):
  sim = simulation(config, data, [settings(config)])
  server, out = sim.initial_server, []
  for r in range(1, num_rounds + 1):
    server, _ = sim.run_round(server, r)
    out.append(jax.tree.map(np.asarray, server.params))
  return out, sim


def _equal_sized_data():
  data = tiny_data(num_clients=12)
  sizes = np.full(12, 20, np.int32)
  rng = np.random.default_rng(3)
  x = rng.normal(size=(240, data.input_dim)).astype(np.float32)
  y = rng.integers(0, data.num_classes, 240).astype(np.int32)
  return dataclasses.replace(data, train_x=x, train_y=y, train_sizes=sizes)


def test_fednova_with_equal_step_counts_is_fedprox():
  """Equal sizes and no stragglers: every a_i is equal, and tau_eff * mean(d_i) is the mean
  delta (to float rounding: FedNova divides by a_i and multiplies back)."""
  data = _equal_sized_data()
  base = tiny_config(**{'stragglers.fraction': 0.0, 'algorithm.mu': 0.3})
  fedprox, _ = _rounds(base, data)
  fednova, _ = _rounds(with_changes(base, **{'algorithm.name': 'fednova'}), data)
  for a, b in zip(fedprox, fednova):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7), a, b)
  # With stragglers, step counts differ and so does FedNova.
  stragglers = {'stragglers.fraction': 0.5}
  other, _ = _rounds(with_changes(base, **{'algorithm.name': 'fednova', **stragglers}), data)
  same, _ = _rounds(with_changes(base, **stragglers), data)
  assert not np.allclose(other[-1]['Dense_0']['kernel'], same[-1]['Dense_0']['kernel'])


def test_scaffold_first_round_is_fedavgs():
  config = tiny_config(**{'stragglers.fraction': 0.5})
  fedprox, _ = _rounds(config, tiny_data(), num_rounds=2)
  scaffold, _ = _rounds(with_changes(config, **{'algorithm.name': 'scaffold'}),
                        tiny_data(),
                        num_rounds=2)
  jax.tree.map(np.testing.assert_array_equal, fedprox[0], scaffold[0])  # c = c_i = 0.
  assert not np.allclose(fedprox[1]['Dense_0']['kernel'], scaffold[1]['Dense_0']['kernel'])


def test_server_momentum_moves_the_model_by_its_own_rule_over_the_clients_mean():
  """FedAvgM through the Simulation, by hand: each round's Delta is the plain loop's weighted mean
  of the clients (engine/reference.py) minus the model, m = beta m + Delta, w += eta m."""
  beta, eta = 0.5, 0.8
  config = tiny_config(
      **{
          'stragglers.fraction': 0.5,
          'server.optimizer': 'momentum',
          'server.momentum': beta,
          'server.learning_rate': eta
      })
  data = tiny_data()
  got, sim = _rounds(config, data)
  loop = reference.make_reference_train_cohort(sim.apply_fn,
                                               learning_rate=config.client.learning_rate,
                                               weight_decay=config.client.weight_decay,
                                               batch_size=config.client.batch_size)
  w = jax.tree.map(lambda a: np.asarray(a, np.float64), sim.initial_params)
  m = jax.tree.map(np.zeros_like, w)
  for r, params in enumerate(got, start=1):
    mean = loop(jax.tree.map(lambda a: a.astype(np.float32), w),
                jax.tree.map(np.asarray, sim.sample(r)), np.asarray(sim.hp['mu']), data.train_x,
                data.train_y, data.train_offsets, data.train_sizes)
    m = jax.tree.map(lambda m, a, w: beta * m + (a - w), m, mean, w)
    w = jax.tree.map(lambda w, m: w + eta * m, w, m)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), params, w)


@pytest.mark.parametrize('on_device', [True, False])
def test_scaffold_client_states_on_device_or_host_follow_the_reference(on_device, monkeypatch):
  if not on_device:  # Too big for the device budget: the states live in host memory.
    monkeypatch.setattr(client_states, 'DEVICE_BUDGET', 0)
  data = tiny_data()
  config = tiny_config(
      **{
          'algorithm.name': 'scaffold',
          'stragglers.fraction': 0.5,
          'server.optimizer': 'adam',
          'server.learning_rate': 0.05,
          'algorithm.weighting': 'batches'
      })
  sim = simulation(config, data, [settings(config), settings(config, seed=5)])
  assert sim.client_states.on_device == on_device
  assert sim.client_states.in_round == on_device  # One device: the round reads and writes it.
  hp = {k: np.asarray(v) for k, v in sim.hp.items()}
  ref_round = reference.make_reference_round(sim.apply_fn,
                                             algorithm='scaffold',
                                             server_optimizer='adam',
                                             batch_size=config.client.batch_size)
  rename = {'server_b1': 'b1', 'server_b2': 'b2', 'server_eps': 'eps'}
  ref_settings = {rename.get(k, k): v for k, v in hp.items()}
  ref = reference.initial_state(jax.tree.map(np.asarray, sim.initial_params), data.num_clients,
                                hp['server_eps'])
  server = sim.initial_server
  for r in range(1, 4):
    ref = ref_round(ref, sim.sample(r), ref_settings, data.train_x, data.train_y,
                    data.train_offsets, data.train_sizes)
    server, _ = sim.run_round(server, r)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    jax.tree.map(close, server.params, ref.params)
    jax.tree.map(close, jax.tree.leaves(sim.client_states.get()), ref.client_c)
  assert np.abs(np.asarray(jax.tree.leaves(sim.client_states.get())[0])).max() > 0


@pytest.mark.parametrize(
    'needed, num_devices, cpu, one_process, where',
    [
        (400, 2, True, True, 'devices'),
        (600, 2, True, True, 'device'),  # CPU devices share the budget: two copies pass it.
        (600, 2, False, True, 'devices'),  # An accelerator's budget is each device's own.
        (400, 2, True, False, 'device'),  # Several processes: each keeps its own, as before.
        (1001, 1, True, True, 'host'),
    ])
def test_client_states_live_where_their_budget_allows(needed, num_devices, cpu, one_process, where):
  assert client_states.home(needed, 1000, num_devices, cpu, one_process) == where


def test_the_memory_estimate_counts_each_copy_of_the_client_states(monkeypatch):
  config = tiny_config(**{'algorithm.name': 'scaffold'})
  data = tiny_data()
  sim = simulation(config, data, [settings(config)])
  store = lambda terms: next(t for t in terms if 'state of each of' in t.what)
  assert sim.client_states.in_round and store(sim._memory_terms).place == 'each'
  plan = data_plan.loaded_data(data, config.clients_per_round, '')
  two = machine.Devices(count=2, cpu=True, memory=1 << 34, platform='cpu')
  estimate = lambda: memory_estimate.estimate(sim.program, sim.cost, plan, two, 1, 2, sim.
                                              batch_size, 'replicated', data.num_clients)
  copies = store(estimate())
  assert copies.place == 'each'  # Counted on each of the two devices (peak()).
  monkeypatch.setattr(client_states, 'DEVICE_BUDGET', int(1.5 * copies.bytes))
  assert store(estimate()).place == 'first'  # Two copies would pass the budget: one device's.


def test_a_client_state_that_cannot_fit_is_refused(monkeypatch):
  monkeypatch.setattr(client_states, 'host_budget', lambda: 1000)
  config = tiny_config(**{'algorithm.name': 'scaffold'})
  with pytest.raises(Exception, match=r'scaffold keeps a state for every client: .* GiB'):
    simulation(config, tiny_data(), [settings(config)])


@pytest.mark.parametrize('name', ['adam', 'yogi', 'adagrad', 'momentum'])
def test_server_optimizers_follow_reddi_et_al(name):
  """Three updates of Algorithm 2 (no bias correction, v from eps^2), written out by hand."""
  deltas = [np.array([0.5, -1.0, 0.0]), np.array([0.1, 2.0, -0.3]), np.array([-0.2, 0.0, 1.0])]
  eta, beta, b1, b2, eps = 0.3, 0.7, 0.9, 0.99, 1e-3
  hp = dict(server_learning_rate=eta,
            server_momentum=beta,
            server_b1=b1,
            server_b2=b2,
            server_eps=eps)
  tx = server_optimizers.make(name, {k: jnp.float32(v) for k, v in hp.items()})
  w = jnp.zeros(3)
  state = tx.init(w)
  w_ref, m, v = np.zeros(3), np.zeros(3), np.full(3, eps * eps)
  for delta in deltas:
    updates, state = tx.update(-jnp.asarray(delta, jnp.float32), state, w)
    w = w + updates
    if name == 'momentum':
      m = beta * m + delta
      w_ref = w_ref + eta * m
      continue
    m = b1 * m + (1 - b1) * delta
    if name == 'adam':
      v = b2 * v + (1 - b2) * delta**2
    elif name == 'yogi':
      v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
    else:
      v = v + delta**2
    w_ref = w_ref + eta * m / (np.sqrt(v) + eps)
  np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)


def test_adaptive_mu_moves_fedprox_and_is_not_applied_where_it_is_not_read():
  """Adaptive mu is FedProx's rule (and FedAvg's, its functions): a FedNova run that sets it runs
  exactly as one that does not, as its warning says (tests/silent_fallbacks_test.py)."""
  records = lambda **over: [{
      k: v for k, v in r.items() if not k.startswith('time/')
  } for r in experiment.train_and_evaluate(small_config(**over))]
  adaptive = records(**{'algorithm.adaptive_mu': True, 'client.learning_rate': 0.3})
  assert len({r['mu'] for r in adaptive}) > 1  # It moved.
  nova = {'algorithm.name': 'fednova', 'algorithm.mu': 0.5, 'client.learning_rate': 0.3}
  nova_adaptive = records(**nova, **{'algorithm.adaptive_mu': True})
  assert nova_adaptive == records(**nova)
  assert {r['mu'] for r in nova_adaptive} == {0.5}


def test_a_checkpoint_that_adapted_mu_for_another_algorithm_resumes_only_if_mu_never_moved():
  """Earlier releases kept an adaptive-mu state in every checkpoint: for FedNova (which no longer
  reads adaptive_mu) it is dropped for a run that did not ask for adaptive mu (its mu never moved),
  and refused otherwise (resuming without it would change the run)."""
  like = {'server': {'params': np.zeros(3, np.float32)}}
  mu = np.array([0.5], np.float32)
  state = {
      'server.params': np.ones(3, np.float32),
      'adaptive.mu': mu,
      'adaptive.last_loss': np.array([1.0], np.float32),
      'adaptive.falling': np.array([2], np.int32)
  }
  restored = rounds._restored_state(Restored(12, state, {}), like, mu)
  np.testing.assert_array_equal(restored['server']['params'], np.ones(3))
  moved = Restored(12, {**state, 'adaptive.mu': np.array([0.6], np.float32)}, {})
  refused = 'the checkpoint of round 12 was made by a release that adapted mu for this algorithm'
  with pytest.raises(ConfigError, match=refused):
    rounds._restored_state(moved, like, mu)
  # A run that asked for adaptive mu is refused even where its mu has not moved (yet).
  with pytest.raises(ConfigError, match=refused):
    rounds._restored_state(Restored(12, state, {}), like, mu, adapted=True)


def test_an_algorithms_own_field_out_of_its_range_is_refused():
  c = tiny_config(**{'algorithm.name': 'feddyn', 'algorithm.alpha': -1.0})
  with pytest.raises(ConfigError) as refused:
    validation.validate(c)
  assert str(refused.value) == 'config.algorithm.alpha = -1.0 must be > 0'
