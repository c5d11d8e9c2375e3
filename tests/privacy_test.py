"""Client-level DP: the clip and noise stages against their definitions, the rounds against a plain
loop that clips by hand, the accountant against direct dp_accounting calls, and the refusals."""
import csv

import dp_accounting
from dp_accounting import rdp
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.aggregation import clip
from fedprox_jax.aggregation import dp_noise
from fedprox_jax.aggregation import gaussian_noise
from fedprox_jax.aggregation.base import Aggregate
from fedprox_jax.experiment import privacy
from fedprox_jax.experiment import validation
from tests import reference_runs as rr
from tests.packed_rounds import packed_rounds
from tests.runs import records
from tests.runs import small_config
from tests.runs import straight_and_resumed

DP = ('clip', 'gaussian_noise')


def _hp(**over):
  hp = dict(clip_norm=1.0,
            noise_multiplier=0.0,
            target_quantile=0.0,
            clip_learning_rate=0.2,
            clipped_count_stddev=0.0,
            target_epsilon=0.0,
            delta=0.0)
  hp.update(over)
  return {k: jnp.float32(v) for k, v in hp.items()}


def _norm(tree):
  return float(
      np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in jax.tree.leaves(tree))))


def test_clipping_scales_the_whole_upload_to_the_norm_and_leaves_small_ones_alone():
  big = {'delta': {'w': jnp.full((3, 4), 5.0)}, 'dc': jnp.full((7,), -3.0)}
  out, extras, _ = clip.client(big, {'clip_norm': jnp.float32(2.0)}, _hp(), None, None)
  assert abs(_norm(out) - 2.0) < 1e-5
  np.testing.assert_allclose(out['dc'] / out['delta']['w'][0, 0], -0.6, rtol=1e-6)  # One scale.
  assert float(extras['unclipped']) == 0.0
  small = {'delta': jnp.array([0.3, -0.4])}
  out, extras, _ = clip.client(small, {'clip_norm': jnp.float32(2.0)}, _hp(), None, None)
  np.testing.assert_array_equal(out['delta'], small['delta'])
  assert float(extras['unclipped']) == 1.0


@pytest.mark.parametrize('sigma,quantile', [(1.3, 0.0), (0.8, 0.5)])
def test_the_noise_on_a_sum_has_the_standard_deviation_of_its_multiplier_times_c(sigma, quantile):
  k, c = 20, 0.7
  hp = _hp(noise_multiplier=sigma, target_quantile=quantile)
  zeros = {'a': jnp.zeros((50, 20)), 'b': jnp.zeros((30,))}

  def draw(key):
    got, _, _ = gaussian_noise.server(
        Aggregate(zeros, jnp.float32(k), {'clip_norm': jnp.float32(c)}, jnp.float32(k)), {}, hp,
        key)
    return jnp.concatenate([a.ravel() for a in jax.tree.leaves(got.sums)]), got.weight

  noise, weight = jax.vmap(draw)(jax.random.split(jax.random.PRNGKey(0), 400))
  # Andrew et al.: the count (sigma_b = K / 20 = 1) takes its share of sigma under adaptive
  # clipping, z^-2 = sigma^-2 - (2 sigma_b)^-2; written out here, not taken from the code.
  z = sigma if quantile == 0 else (sigma**-2 - (2 * k / 20)**-2)**-0.5
  np.testing.assert_allclose(np.std(np.asarray(noise)), z * c, rtol=0.01)
  assert abs(float(np.mean(noise))) < 0.01 * z * c
  np.testing.assert_array_equal(weight, k)  # The fixed denominator: K, whoever uploaded.


def test_adaptive_clipping_moves_c_geometrically_towards_the_quantile():
  k, c = 10, 2.0
  hp = _hp(target_quantile=0.5, clip_learning_rate=0.2)  # sigma = 0: the count is exact.
  agg = Aggregate({'a': jnp.zeros(3)}, jnp.float32(k), {'unclipped': jnp.float32(9.0)},
                  jnp.float32(k))
  out, state, stats = clip.server(agg, {'clip_norm': jnp.float32(c)}, hp, jax.random.PRNGKey(0))
  np.testing.assert_allclose(state['clip_norm'], c * np.exp(-0.2 * (0.9 - 0.5)), rtol=1e-6)
  np.testing.assert_allclose(stats['privacy/unclipped_fraction'], 0.9)
  assert float(out.extras['clip_norm']) == c  # This round's uploads were clipped to the old C.
  fixed = clip.server(agg, {'clip_norm': jnp.float32(c)}, _hp(target_quantile=0.0),
                      jax.random.PRNGKey(0))
  assert float(fixed[1]['clip_norm']) == c
  assert np.isnan(fixed[2]['privacy/unclipped_fraction'])  # Not released without adaptation.


def _uniform(**over):
  return rr.settings(weighting=[2, 2], **{k: [v, v] for k, v in over.items()})


def _private(sigma=0.0, c=1.0, **over):
  return {
      **_uniform(**over),
      **{
          k: np.full(rr.RUNS, float(v)) for k, v in _hp(clip_norm=c, noise_multiplier=sigma).items()
      }
  }


@pytest.mark.parametrize('name', ['fedavg', 'fedprox', 'scaffold', 'feddyn'])
def test_no_noise_and_a_norm_above_every_upload_is_the_non_private_run(name):
  data = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(data[3])
  extra = {'alpha': 0.01} if name == 'feddyn' else {}
  plain, plain_states = packed_rounds(name,
                                      rr.apply_fn,
                                      rr.init_params(),
                                      _uniform(**extra),
                                      data,
                                      cohorts=cohorts)
  private, private_states = packed_rounds(name,
                                          rr.apply_fn,
                                          rr.init_params(),
                                          _private(c=1e6, **extra),
                                          data,
                                          cohorts=cohorts,
                                          stages=DP)
  # SCAFFOLD's and FedDyn's client-state arithmetic compiles a little differently once the clip's
  # scale is in the program: last-bit differences (1e-8); FedAvg and FedProx come out bit for bit.
  same = (np.testing.assert_array_equal if name in ('fedavg', 'fedprox') else
          lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7))
  rr.assert_trees(same, plain.params, private.params)
  rr.assert_trees(same, plain.algorithm, private.algorithm)
  rr.assert_trees(same, plain_states, private_states)


def _clipped_reference(data, cohorts, c, lr=0.1):
  """Plain loop: each client's final parameters from the sequential reference run alone (K = 1,
  server SGD at rate 1 lands on them), its delta clipped to norm c by hand, summed and divided by
  K, round after round."""
  params = rr.init_params()
  cfg = _uniform(learning_rate=lr)
  for cohort in cohorts:
    k = cohort.clients.shape[1]
    new = {}
    finals = rr.each_clients_final_params(cfg, data, cohort, params)
    for r in range(rr.RUNS):
      total = None
      for j in range(k):
        delta = jax.tree.map(
            lambda y, w: np.asarray(y[r], np.float64) - np.asarray(w[r], np.float64), finals[j],
            params)
        scale = min(1.0, c / _norm(delta))
        total = jax.tree.map(lambda d: scale * d, delta) if total is None else jax.tree.map(
            lambda t, d: t + scale * d, total, delta)
      new[r] = jax.tree.map(lambda w, t: (np.asarray(w[r], np.float64) + t / k).astype(np.float32),
                            params, total)
    params = jax.tree.map(lambda *runs: np.stack(runs), *[new[r] for r in range(rr.RUNS)])
  return params


def test_clipped_rounds_equal_a_plain_loop_that_clips_each_client_by_hand():
  data = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(data[3])
  c = 0.05  # Below most clients' update norms: most are clipped, some not.
  private, _ = packed_rounds('fedprox',
                             rr.apply_fn,
                             rr.init_params(),
                             _private(c=c),
                             data,
                             cohorts=cohorts,
                             stages=DP)
  expected = _clipped_reference(data, cohorts, c)
  rr.assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), private.params,
                  expected)


def test_one_client_with_a_huge_update_moves_the_model_by_at_most_2c_over_k():
  x, y, offsets, sizes = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(sizes, rounds=1)
  wild = x.copy()
  for first in cohorts[0].clients[:, 0]:  # Replace one client's data in each run's cohort.
    assert first not in cohorts[0].clients[:, 1:]
    wild[offsets[first]:offsets[first] + sizes[first]] *= 1e4
  c, k = 0.5, cohorts[0].clients.shape[1]
  run = lambda features: packed_rounds('fedprox',
                                       rr.apply_fn,
                                       rr.init_params(),
                                       _private(sigma=2.0, c=c), (features, y, offsets, sizes),
                                       rounds=1,
                                       cohorts=cohorts,
                                       stages=DP)[0].params
  calm, moved = run(x), run(wild)  # The same keys: the same noise in both.
  for r in range(rr.RUNS):
    gap = _norm(jax.tree.map(lambda a, b: np.asarray(a[r]) - np.asarray(b[r]), moved, calm))
    assert 0 < gap <= 2 * c / k + 1e-5
  start = rr.init_params()
  step = _norm(jax.tree.map(lambda a, b: np.asarray(a[0]) - np.asarray(b[0]), calm, start))
  assert step > 2 * c  # The noise (sigma C / K per coordinate) is there.


def test_the_ledger_equals_fresh_compositions_and_grows_with_the_rounds():
  n, k, sigma = 1000, 10, 1.0
  d = privacy.delta(0.0, n)
  assert d == n**-1.1 and d < 1 / n
  ledger = privacy.Ledger(n, k, sigma, d)
  eps = [ledger.epsilon(t) for t in (1, 7, 100, 2000)]
  assert eps == sorted(eps) and eps[0] > 0
  for t, e in zip((1, 7, 100, 2000), eps):
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(
        dp_accounting.SampledWithoutReplacementDpEvent(n, k, dp_accounting.GaussianDpEvent(0.5)), t)
    np.testing.assert_allclose(e, acc.get_epsilon(d), rtol=1e-9)
  assert privacy.Ledger(n, k, 0.0, d).epsilon(5) == float('inf')
  assert privacy.Ledger(n, k, 0.0, d).epsilon(0) == privacy.Ledger(n, k, 1.0, d).epsilon(0) == 0


def test_a_target_epsilon_is_reached_within_the_configured_rounds():
  n, k, rounds = 1000, 10, 100
  d = privacy.delta(0.0, n)
  sigma = privacy.calibrate(n, k, rounds, 2.0, d)
  assert 1.9 <= privacy.epsilon_of(n, k, sigma, rounds, d) <= 2.0
  assert privacy.epsilon_of(n, k, sigma * 0.98, rounds, d) > 2.0  # The smallest such sigma.


def test_a_run_records_the_epsilon_that_dp_accounting_gives_its_rounds(tmp_path):
  c = small_config(
      **{
          'algorithm.weighting': 'uniform',
          'privacy.clip_norm': 1.0,
          'privacy.noise_multiplier': 1.0,
          'num_rounds': 6,
          'eval_every': 3
      })
  experiment.train_and_evaluate(c, str(tmp_path / 'run'))
  got = records(tmp_path / 'run')
  # Worked by hand: 6 rounds of K = 4 of N = 12, sensitivity 2C so multiplier sigma / 2 = 0.5,
  # delta = 12^-1.1, replace-one adjacency.
  acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  acc.compose(
      dp_accounting.SampledWithoutReplacementDpEvent(12, 4, dp_accounting.GaussianDpEvent(0.5)), 6)
  assert [r['round'] for r in got] == [0, 3, 6]
  np.testing.assert_allclose(got[-1]['privacy/epsilon'], acc.get_epsilon(12**-1.1), rtol=1e-6)
  assert got[0]['privacy/epsilon'] == 0 < got[1]['privacy/epsilon'] < got[2]['privacy/epsilon']
  assert got[-1]['privacy/delta'] == pytest.approx(12**-1.1)


def test_a_private_run_resumes_bit_identical(tmp_path):
  over = {
      'algorithm.weighting': 'uniform',
      'privacy.clip_norm': 0.5,
      'privacy.noise_multiplier': 0.8,
      'privacy.target_quantile': 0.5,
      'privacy.clipped_count_stddev': 1.0,
      'eval_every': 2
  }
  straight, resumed = straight_and_resumed(tmp_path, over)
  assert straight == resumed
  clip_norms = {r['privacy/clip_norm'] for r in straight if 'privacy/clip_norm' in r}
  assert len(clip_norms) > 1  # Adaptive clipping moved C, and the resumed run moved it alike.


def test_an_extended_run_keeps_its_calibrated_noise_and_says_its_epsilon(tmp_path, caplog):
  over = {
      'algorithm.weighting': 'uniform',
      'privacy.clip_norm': 1.0,
      'privacy.target_epsilon': 5.0,
      'num_rounds': 4,
      'eval_every': 2,
      'checkpoint_every': 2
  }
  experiment.train_and_evaluate(small_config(**over), str(tmp_path / 'run'))
  first = records(tmp_path / 'run')
  assert 4.9 <= first[-1]['privacy/epsilon'] <= 5.0
  caplog.set_level('INFO')
  experiment.train_and_evaluate(small_config(**{**over, 'num_rounds': 8}), str(tmp_path / 'run'))
  longer = records(tmp_path / 'run')
  assert {r['privacy/noise_multiplier'] for r in longer} == {first[-1]['privacy/noise_multiplier']}
  assert longer[-1]['privacy/epsilon'] > 5.0
  assert 'keep the noise multipliers they began with' in caplog.text


@pytest.mark.parametrize(
    'changes,message',
    [
        ({
            'privacy.clip_norm': -1.0
        }, 'privacy.clip_norm = -1.0 must be >= 0'),
        ({
            'privacy.noise_multiplier': -0.5
        }, 'privacy.noise_multiplier = -0.5 must be >= 0'),
        ({
            'privacy.target_epsilon': -2.0
        }, 'privacy.target_epsilon = -2.0 must be >= 0'),
        ({
            'privacy.delta': 1.0
        }, 'privacy.delta = 1.0 must be in (0, 1)'),
        ({
            'privacy.delta': -0.1
        }, 'privacy.delta = -0.1 must be in (0, 1)'),
        ({
            'privacy.target_quantile': 1.0
        }, 'privacy.target_quantile = 1.0 must be in (0, 1)'),
        ({
            'privacy.clip_learning_rate': -1.0
        }, 'privacy.clip_learning_rate = -1.0 must be >= 0'),
        ({
            'privacy.clipped_count_stddev': -1.0
        }, 'privacy.clipped_count_stddev = -1.0 must be >= 0'),
        ({
            'privacy.noise_multiplier': 1.0
        }, 'needs privacy.clip_norm > 0'),
        ({
            'privacy.target_epsilon': 1.0
        }, 'needs privacy.clip_norm > 0'),
        ({
            'privacy.clip_norm': 1.0
        }, "algorithm.weighting = 'examples' with privacy.clip_norm"),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'algorithm.name': 'fednova'
        }, "'fednova' does not take privacy.clip_norm"),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'algorithm.name': 'qffl'
        }, "'qffl' does not take privacy.clip_norm"),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'algorithm.adaptive_mu': True
        }, 'algorithm.adaptive_mu with privacy.clip_norm'),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'privacy.noise_multiplier': 1.0,
            'privacy.target_epsilon': 1.0
        }, 'set one'),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'privacy.noise_multiplier': 1.5,
            'privacy.target_quantile': 0.5
        }, 'is not below 2 x'),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'privacy.target_epsilon': 2.0,
            'privacy.target_quantile': 0.5
        }, 'is not below 2 x'),  # The calibrated sigma cannot be split: refused before compute.
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'privacy.target_epsilon': 1e9
        }, 'is met by a noise multiplier of 0.01 already'),
        ({
            'privacy.clip_norm': 1e40
        }, 'privacy.clip_norm = 1e+40 is past float32'),
        ({
            'privacy.clip_norm': 1.0,
            'algorithm.weighting': 'uniform',
            'privacy.noise_multiplier': 1e9
        }, 'is past 1e+06'),
    ])
def test_bad_privacy_settings_are_refused_before_compute(changes, message):
  c = small_config(**changes)
  with pytest.raises(errors.ConfigError, match=None) as e:
    validation.validate(c)
  assert message in str(e.value)


def test_a_target_adaptive_clipping_cannot_split_is_refused(tmp_path):
  c = small_config(
      **{
          'algorithm.weighting': 'uniform',
          'privacy.clip_norm': 1.0,
          'privacy.target_epsilon': 0.3,
          'privacy.target_quantile': 0.5
      })
  with pytest.raises(errors.ConfigError) as e:
    experiment.train_and_evaluate(c, str(tmp_path / 'run'))
  assert 'is not below 2 x' in str(e.value) and 'raise target_epsilon' in str(e.value)


def test_dp_noise_needs_sigma_below_twice_the_count_noise():
  hp = {'noise_multiplier': 2.0, 'target_quantile': 0.5, 'clipped_count_stddev': 1.0}
  assert np.isnan(dp_noise.update_noise_multiplier(hp, 10))
  hp['noise_multiplier'] = 1.0
  np.testing.assert_allclose(dp_noise.update_noise_multiplier(hp, 10), (1 - 0.25)**-0.5)


def test_a_sweep_varies_the_privacy_settings_per_run_in_one_program(tmp_path, caplog):
  caplog.set_level('INFO')
  base = small_config(**{
      'algorithm.weighting': 'uniform',
      'privacy.clip_norm': 1.0,
      'num_rounds': 4,
      'eval_every': 4
  })
  sweep = ml_collections.ConfigDict({
      'repeats': 1,
      'arms': {
          'dp': {
              'grid': {
                  'privacy': {
                      'noise_multiplier': [0.5, 2.0],
                      'clip_norm': [0.3, 1.0]
                  }
              }
          },
          'target': {
              'privacy': {
                  'target_epsilon': 3.0
              }
          },
          'open': {
              'privacy': {
                  'clip_norm': 0.0
              }
          }
      }
  })
  experiment.run_sweep(base, sweep, str(tmp_path))
  assert 'Sweep of 6 runs in 2 programs' in caplog.text  # DP's runs share one, whatever sigma.
  with open(tmp_path / 'results.csv', newline='') as f:
    last = [r for r in csv.DictReader(f) if r['round'] == '4']
  by_sigma = {}
  for row in last:
    if row['arm'] == 'open':
      assert row['privacy/epsilon'] == '' and row['clip_norm'] == ''  # No DP: no columns.
      continue
    sigma = float(row['privacy/noise_multiplier'])
    expected = privacy.Ledger(12, 4, sigma, 12**-1.1).epsilon(4)
    np.testing.assert_allclose(float(row['privacy/epsilon']), expected, rtol=1e-6)
    by_sigma.setdefault(sigma, set()).add(float(row['local_test/loss']))
  assert set(by_sigma) >= {0.5, 2.0} and len(by_sigma) == 3  # The target's calibrated sigma.
  assert len(by_sigma[0.5] | by_sigma[2.0]) == 4  # Each run its own C and sigma.
  assert 2.9 <= max(float(r['privacy/epsilon']) for r in last if r['arm'] == 'target') <= 3.0


def test_each_round_and_run_draws_its_own_noise_key():
  from fedprox_jax.engine import simulation  # pylint: disable=g-import-not-at-top
  run_keys = jax.random.split(jax.random.PRNGKey(0), 3)
  keys = np.concatenate([np.asarray(simulation.stage_keys(t, run_keys)) for t in range(1, 5)])
  assert len({tuple(k) for k in keys}) == 12
  cohort_keys = {
      tuple(np.asarray(jax.vmap(jax.random.fold_in, (0, None))(run_keys, t))[r])
      for t in range(1, 5)
      for r in range(3)
  }
  assert not cohort_keys & {tuple(k) for k in keys}  # Not the cohort's draw either.
