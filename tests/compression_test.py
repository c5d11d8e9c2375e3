"""Compressed uploads: quantization and top-k against their definitions, error feedback's
conservation, the rounds against a plain loop that sparsifies by hand, the byte counts against a
hand count, the identities with the uncompressed run, DP's bound with compression, resumption and
the refusals."""
import csv
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax import experiment
from fedprox_jax.aggregation import compress
from fedprox_jax.aggregation import encoding
from fedprox_jax.aggregation import error_feedback
from fedprox_jax.aggregation import quantization
from fedprox_jax.aggregation import sparsification
from fedprox_jax.aggregation import uniform_draws
from fedprox_jax.experiment import validation
from tests import reference_runs as rr
from tests.packed_rounds import packed_rounds
from tests.runs import records
from tests.runs import small_config
from tests.runs import straight_and_resumed


def _hp(bits=0, topk=1.0):
  return {'bits': jnp.float32(bits), 'topk': jnp.float32(sparsification.at_most(topk))}


@pytest.mark.parametrize('bits', [1, 2, 4, 8])
def test_quantization_is_unbiased_and_within_one_level(bits):
  x = jax.random.normal(jax.random.PRNGKey(3), (300,)) * 2.0
  lo, hi = float(x.min()), float(x.max())
  step = (hi - lo) / (2**bits - 1)
  n = 4000
  q = jax.vmap(lambda k: quantization.quantize(x, jnp.float32(bits), k, jnp.ones(x.shape, bool)))(
      jax.random.split(jax.random.PRNGKey(0), n))
  q, x = np.asarray(q, np.float64), np.asarray(x, np.float64)
  assert np.all(np.abs(q - x) <= step * (1 + 1e-5))  # Within one level of the input.
  levels = (q - lo) / step
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # On the 2^b levels.
  assert levels.min() > -1e-3 and levels.max() < 2**bits - 1 + 1e-3
  # Each draw's error is within +-step with variance <= step^2 / 4: the mean of n draws is within
  # 5 standard errors of x.
  assert np.all(np.abs(q.mean(0) - x) <= 5 * step / 2 / np.sqrt(n) + 1e-6)
  assert np.abs(q.mean(0) - x).max() < step / 10  # (Not merely bounded: it converges.)


def test_quantization_of_the_widest_float32_range_stays_finite():
  x = jnp.array([-3e38, 3e38, 0.0, 1.0])
  for bits in (1, 8):
    q = quantization.quantize(x, jnp.float32(bits), jax.random.PRNGKey(0), jnp.ones(4, bool))
    assert np.all(np.isfinite(np.asarray(q)))
    assert float(q.min()) >= float(x.min()) and float(q.max()) <= float(x.max())


def test_32_bits_send_the_values_as_they_are():
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
  upload = {'delta': x, 'dc': -x}
  for bits in (0, 32):
    sent = compress.compress(upload, _hp(bits=bits), jax.random.PRNGKey(0))
    rr.assert_trees(np.testing.assert_array_equal, sent, upload)


@pytest.mark.parametrize('size', [1, 3, 10, 1000, 7840])
@pytest.mark.parametrize('fraction', [0.01, 0.013, 0.1, 1 / 3, 0.5, 0.999])
def test_top_k_keeps_exactly_ceil_kd_coordinates_the_largest(size, fraction):
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(size), (size,)))
  mask = np.asarray(sparsification.top_k_mask(jnp.asarray(x), _hp(topk=fraction)['topk']))
  # ceil(k d) of the decimal k, worked out in exact decimal arithmetic.
  from decimal import Decimal  # pylint: disable=g-import-not-at-top
  expected = max(1, math.ceil(Decimal(repr(fraction)) * size))
  assert mask.sum() == expected
  assert size == mask.sum() or np.abs(x[mask]).min() >= np.abs(x[~mask]).max()
  assert encoding.upload_bytes([size], 0, fraction) * 8 >= expected * 32


def test_top_k_with_ties_still_keeps_exactly_its_count():
  x = jnp.array([3.0, -1.0, 1.0, 1.0, -3.0, 1.0, 0.0, 2.0, -1.0, 1.0])
  mask = np.asarray(sparsification.top_k_mask(x, _hp(topk=0.5)['topk']))
  assert mask.sum() == 5
  np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2, 4, 7])  # Ties: lower index.


def test_top_k_ties_are_broken_alike_vmapped_and_alone():
  """Vmapped, the tie-breaking cond computes both branches and selects: the same masks."""
  rows = jnp.array([[3.0, -1.0, 1.0, 1.0, -3.0, 1.0, 0.0, 2.0, -1.0, 1.0],
                    [0.5, -4.0, 3.0, 2.0, -1.0, 0.25, 6.0, -7.0, 1.5, 0.1]])
  fractions = jnp.stack([_hp(topk=0.5)['topk'], _hp(topk=0.3)['topk']])
  both = np.asarray(jax.vmap(sparsification.top_k_mask)(rows, fractions))
  np.testing.assert_array_equal(np.flatnonzero(both[0]), [0, 1, 2, 4, 7])  # A tie: lower index.
  np.testing.assert_array_equal(np.flatnonzero(both[1]), [1, 6, 7])  # No tie: the largest.
  for row, fraction, mask in zip(rows, fractions, both):
    np.testing.assert_array_equal(np.asarray(sparsification.top_k_mask(row, fraction)), mask)


def test_compression_vmapped_over_runs_equals_each_run_alone():
  """Vmapped (lanes of several runs), the stage's conds select between both branches; alone,
  each runs one branch. The uploads sent are the same either way, for every setting."""
  settings = [(0, 0.3), (4, 1.0), (32, 0.1), (2, 0.3), (0, 1.0)]
  hp = {k: jnp.stack([_hp(b, t)[k] for b, t in settings]) for k in ('bits', 'topk')}
  keys = jax.random.split(jax.random.PRNGKey(3), len(settings))
  uploads = {
      'w': jax.random.normal(jax.random.PRNGKey(4), (len(settings), 20, 6)),
      'b': jax.random.normal(jax.random.PRNGKey(5), (len(settings), 6))
  }
  together = jax.vmap(compress.compress)(uploads, hp, keys)
  for i in range(len(settings)):
    alone = jax.jit(compress.compress)(jax.tree.map(lambda a, i=i: a[i], uploads),
                                       jax.tree.map(lambda a, i=i: a[i], hp), keys[i])
    # The same coordinates, at the same levels: the two programs may round the level's value
    # (lo (1 - f) + hi f) in a different order, within a float32 ulp or two.
    rr.assert_trees(lambda a, b: np.testing.assert_array_equal(a != 0, b != 0), alone,
                    jax.tree.map(lambda a, i=i: a[i], together))
    rr.assert_trees(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0), alone,
                    jax.tree.map(lambda a, i=i: a[i], together))
  assert not np.array_equal(together['w'][1], uploads['w'][1])  # 4 bits: changed.


@pytest.mark.parametrize('shape', [(1,), (7, 5), (784, 10), (3, 4, 5)])
def test_quantizations_draws_are_jax_random_uniforms(shape):
  """uniform_draws unrolls Threefry for CPU speed; its values are jax.random.uniform's."""
  with jax.threefry_partitionable(True):  # JAX's default.
    for seed in range(3):
      key = jax.random.fold_in(jax.random.PRNGKey(seed), 1 << 20)
      np.testing.assert_array_equal(
          np.asarray(jax.jit(uniform_draws.uniform, static_argnums=1)(key, shape)),
          np.asarray(jax.random.uniform(key, shape)))


def test_error_feedback_sends_over_the_rounds_what_the_uncompressed_uploads_sum_to():
  shapes = {'delta': {'w': (20, 6), 'b': (6,)}, 'dc': (13,)}
  residual = error_feedback.init_client_state(
      jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
                   shapes,
                   is_leaf=lambda s: isinstance(s, tuple)))
  hp = _hp(bits=2, topk=0.1)
  sent_sum = uploads_sum = jax.tree.map(jnp.zeros_like, residual)
  for t in range(6):
    key = jax.random.PRNGKey(t)
    upload = jax.tree.map(
        lambda r, i=t: jax.random.normal(jax.random.fold_in(key, r.size), r.shape), residual)
    sent, extras, residual = error_feedback.client(upload, {}, hp, key, residual)
    assert 0 < float(extras['compression_error'])
    sent_sum = jax.tree.map(jnp.add, sent_sum, sent)
    uploads_sum = jax.tree.map(jnp.add, uploads_sum, upload)
  rr.assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                  jax.tree.map(jnp.add, sent_sum, residual), uploads_sum)
  assert max(float(jnp.abs(r).max()) for r in jax.tree.leaves(residual)) > 0.1  # Some held back.


def test_byte_counts_match_a_hand_count_for_the_logistic_regression():
  sizes = [784 * 10, 10]  # The MNIST model: 7,850 parameters in two tensors.
  assert encoding.upload_bytes(sizes) == 7850 * 4
  # b = 4: 4 bits a value, and each tensor's min and step as two 32-bit floats.
  assert encoding.upload_bytes(sizes, bits=4) == (7850 * 4 + 2 * 2 * 32) // 8 == 3941
  # top-k 10%: 784 of 7,840 and 1 of 10 values at 32 bits; indices at ceil(log2 7840) = 13 bits
  # (10,192 bits) lose to a 7,840-bit bitmap; the bias's one index takes 4 bits.
  assert encoding.upload_bytes(sizes, topk=0.1) == math.ceil((785 * 32 + 7840 + 4) / 8) == 4121
  both = (784 * 4 + 7840 + 64) + (1 * 4 + 4 + 64)
  assert encoding.upload_bytes(sizes, bits=4, topk=0.1) == math.ceil(both / 8) == 1389
  # top-k 1%: 79 kernel indices at 13 bits (1,027) beat the bitmap.
  assert encoding.upload_bytes(sizes, topk=0.01) == math.ceil((80 * 32 + 79 * 13 + 4) / 8)


def _settings(**over):
  return rr.settings(weighting=[2, 2], **{k: [v, v] for k, v in over.items()})


def _compressed(bits=0, topk=1.0, **over):
  return {
      **_settings(**over), 'bits': np.full(rr.RUNS, float(bits)),
      'topk': np.full(rr.RUNS, sparsification.at_most(topk))
  }


@pytest.mark.parametrize('name', ['fedavg', 'scaffold'])
@pytest.mark.parametrize('stage', ['compress', 'error_feedback'])
def test_32_bits_and_topk_1_are_the_uncompressed_run(name, stage):
  data = rr.uneven_data()  # The reference's cohorts: a dropped client and an idle one too.
  plain, plain_states = packed_rounds(name, rr.apply_fn, rr.init_params(), _settings(), data)
  same, states = packed_rounds(name,
                               rr.apply_fn,
                               rr.init_params(),
                               _compressed(bits=32),
                               data,
                               stages=(stage,))
  rr.assert_trees(np.testing.assert_array_equal, plain.params, same.params)
  rr.assert_trees(np.testing.assert_array_equal, plain.algorithm, same.algorithm)
  if stage == 'error_feedback':  # Nothing left out: every residual stays 0.
    assert all(not np.asarray(a).any() for a in jax.tree.leaves(states['stages']))
    states = states['algorithm'] or None
  rr.assert_trees(np.testing.assert_array_equal, plain_states, states)


@pytest.mark.parametrize('stage', ['compress', 'error_feedback'])
def test_scaffold_clients_move_their_control_variates_by_what_they_sent(stage):
  """c stays the mean of the c_i (uniform weights: (1/N) sum_i c_i) however the dc were cut."""
  data = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(data[3], rounds=3)
  server, states = packed_rounds('scaffold',
                                 rr.apply_fn,
                                 rr.init_params(),
                                 _compressed(bits=2, topk=0.3),
                                 data,
                                 cohorts=cohorts,
                                 stages=(stage,))
  own = states['algorithm'] if stage == 'error_feedback' else states
  rr.assert_trees(lambda c, ci: np.testing.assert_allclose(c, np.asarray(ci).mean(1), atol=1e-6),
                  server.algorithm['c'], own)
  assert max(float(np.abs(a).max()) for a in jax.tree.leaves(server.algorithm['c'])) > 1e-3


def test_a_clients_draws_do_not_depend_on_where_its_data_are_held(tmp_path):
  over = {'compression.bits': 2, 'num_rounds': 3, 'eval_every': 3}
  held = [
      records_of(tmp_path / mode, small_config(**over, **{'compute.client_data': mode}))
      for mode in ('replicated', 'per_round')
  ]
  assert held[0] == held[1]


def _top_k_by_hand(x: np.ndarray, fraction: float) -> np.ndarray:
  flat = x.ravel()
  kept = np.argsort(-np.abs(flat), kind='stable')[:math.ceil(fraction * flat.size - 1e-9)]
  out = np.zeros_like(flat)
  out[kept] = flat[kept]
  return out.reshape(x.shape)


def _sparsified_reference(data, cohorts, fraction, feedback):
  """Plain loop: each client's delta from the sequential reference run alone (K = 1, server SGD
  at rate 1 lands on its final parameters), plus its residual, top-k by hand with NumPy, the rest
  kept as its residual, the sent deltas averaged over K, round after round."""
  params = rr.init_params()
  cfg = _settings()
  residual = {}
  for cohort in cohorts:
    k = cohort.clients.shape[1]
    finals = rr.each_clients_final_params(cfg, data, cohort, params)
    new = []
    for r in range(rr.RUNS):
      total = jax.tree.map(lambda w: np.zeros(w.shape[1:]), params)
      for j in range(k):
        client = int(cohort.clients[r, j])
        delta = jax.tree.map(lambda y, w: np.asarray(y[r], np.float64) - np.asarray(w[r]),
                             finals[j], params)
        held = residual.get((r, client), jax.tree.map(np.zeros_like, delta))
        target = jax.tree.map(np.add, delta, held) if feedback else delta
        sent = jax.tree.map(lambda a: _top_k_by_hand(a, fraction), target)
        residual[(r, client)] = jax.tree.map(np.subtract, target, sent)
        total = jax.tree.map(np.add, total, sent)
      new.append(jax.tree.map(lambda w, t: (np.asarray(w[r], np.float64) + t / k), params, total))
    params = jax.tree.map(lambda *runs: np.stack(runs).astype(np.float32), *new)
  return params


@pytest.mark.parametrize('feedback', [False, True])
@pytest.mark.parametrize('num_lanes', [1, 3])  # One lane uploads unbatched: the conds skip work.
def test_sparsified_rounds_equal_a_plain_loop_that_keeps_the_top_k_by_hand(feedback, num_lanes):
  data = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(data[3], rounds=4)
  got, _ = packed_rounds('fedprox',
                         rr.apply_fn,
                         rr.init_params(),
                         _compressed(topk=0.3),
                         data,
                         cohorts=cohorts,
                         rounds=4,
                         num_lanes=num_lanes,
                         stages=('error_feedback' if feedback else 'compress',))
  expected = _sparsified_reference(data, cohorts, 0.3, feedback)
  rr.assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), got.params, expected)
  other = _sparsified_reference(data, cohorts, 0.3, not feedback)  # The two differ: it matters.
  assert not np.allclose(got.params['Dense_0']['kernel'], other['Dense_0']['kernel'], atol=1e-4)


def _dp_hp(c):
  return {
      key: np.full(rr.RUNS, v) for key, v in dict(clip_norm=c,
                                                 noise_multiplier=0.0,
                                                 target_quantile=0.0,
                                                 clip_learning_rate=0.2,
                                                 clipped_count_stddev=0.0,
                                                 target_epsilon=0.0,
                                                 delta=0.0).items()
  }


def test_with_dp_what_a_client_sends_is_clipped_after_compression_and_its_residual():
  from fedprox_jax import aggregation  # pylint: disable=g-import-not-at-top
  stages = aggregation.chain(('error_feedback', 'clip'))
  c = 0.5
  hp = {k: jnp.float32(v[0]) for k, v in {**_compressed(bits=1, topk=0.5), **_dp_hp(c)}.items()}
  upload = {'delta': jnp.linspace(-0.1, 0.3, 40).reshape(8, 5)}
  residual = {'delta': jnp.full((8, 5), 7.0)}  # Far past C: what earlier rounds held back.
  sent, _, states = aggregation.client(stages, upload, {'clip': {
      'clip_norm': jnp.float32(c)
  }}, hp, jax.random.PRNGKey(0), {'error_feedback': residual})
  norm = float(jnp.sqrt(jnp.sum(sent['delta']**2)))
  assert abs(norm - c) < 1e-5  # Clipped to C, though compression and residual were far past it.
  # The chain hands its first stage fold_in(key, 0).
  unclipped, _, _ = error_feedback.client(upload, {}, hp,
                                          jax.random.fold_in(jax.random.PRNGKey(0), 0), residual)
  assert float(jnp.sqrt(jnp.sum(unclipped['delta']**2))) > 10 * c
  rr.assert_trees(np.testing.assert_array_equal, states['error_feedback'],
                  jax.tree.map(lambda u, r, s: u + r - s, upload, residual, unclipped))


def test_with_dp_one_client_moves_the_sum_by_at_most_c_whatever_the_compression():
  x, y, offsets, sizes = rr.uneven_data()
  cohorts = rr.no_drop_cohorts(sizes, rounds=1)
  wild = x.copy()
  for first in cohorts[0].clients[:, 0]:  # One client's data in each run's cohort.
    assert first not in cohorts[0].clients[:, 1:]
    wild[offsets[first]:offsets[first] + sizes[first]] *= 1e4
  c, k = 0.05, cohorts[0].clients.shape[1]
  hp = {**_compressed(bits=1, topk=0.5), **_dp_hp(c)}

  def run(features):
    return packed_rounds('fedprox',
                         rr.apply_fn,
                         rr.init_params(),
                         hp, (features, y, offsets, sizes),
                         rounds=1,
                         cohorts=cohorts,
                         stages=('error_feedback', 'clip', 'gaussian_noise'))[0].params

  calm, moved = run(x), run(wild)  # The same keys: the same draws in both.
  for r in range(rr.RUNS):
    gap = np.sqrt(
        sum(
            np.sum(np.square(np.asarray(a[r], np.float64) - np.asarray(b[r])))
            for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(calm))))
    # 1-bit quantization raises norms far past C; the clip after it bounds the change (2C / K in
    # the mean: the client's upload is replaced by one of norm <= C).
    assert 0 < gap <= 2 * c / k + 1e-6


def test_a_run_counts_its_bytes_exactly(tmp_path):
  c = small_config(**{'compression.bits': 4, 'num_rounds': 5, 'eval_every': 1})
  c.stragglers.fraction = 0.5
  c.algorithm.drop_stragglers = True  # FedAvg: dropped stragglers upload nothing.
  c.algorithm.mu = 0.0
  experiment.train_and_evaluate(c, str(tmp_path / 'run'))
  got = records(tmp_path / 'run')
  # Synthetic(1, 1)'s logistic regression: a 60 x 10 kernel and 10 biases, 4 bits a value and
  # each tensor's min and step at 32 bits; the model goes down to 4 clients at 32 bits.
  per_client = math.ceil((610 * 4 + 2 * 64) / 8)
  total = 0
  assert got[0]['comm/upload_bytes'] == got[0]['comm/upload_bytes_total'] == 0
  for r in got[1:]:
    assert r['comm/upload_bytes'] == r['round/active_clients'] * per_client
    total += r['comm/upload_bytes']
    assert r['comm/upload_bytes_total'] == total
    assert r['comm/download_bytes'] == 4 * 610 * 4
    assert r['comm/download_bytes_total'] == r['round'] * 4 * 610 * 4
  assert {r['round/active_clients'] for r in got[1:]} != {4}  # Some rounds dropped stragglers.


def test_error_feedback_resumes_bit_identical(tmp_path):
  over = {
      'compression.topk': 0.1,
      'compression.bits': 2,
      'compression.error_feedback': True,
      'eval_every': 2
  }
  straight, resumed = straight_and_resumed(tmp_path, over)
  assert straight == resumed
  assert straight[-1]['comm/upload_bytes_total'] > 0
  plain = records_of(tmp_path / 'plain',
                     small_config(**{
                         **over, 'compression.error_feedback': False
                     }))
  assert plain[-1]['local_test/loss'] != straight[-1]['local_test/loss']  # The residuals count.


def records_of(workdir, config):
  experiment.train_and_evaluate(config, str(workdir))
  return records(workdir)


@pytest.mark.parametrize('changes,message', [
    ({
        'compression.bits': 3
    }, 'compression.bits = 3 must be one of'),
    ({
        'compression.bits': True
    }, 'compression.bits = True must be one of'),
    ({
        'compression.topk': 0.0
    }, 'compression.topk = 0.0 must be in (0, 1]'),
    ({
        'compression.topk': 1.5
    }, 'compression.topk = 1.5 must be in (0, 1]'),
    ({
        'compression.error_feedback': True
    }, 'error_feedback = True needs compression'),
])
def test_bad_compression_settings_are_refused_before_compute(changes, message):
  with pytest.raises(errors.ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    validation.validate(small_config(**changes))


def test_residuals_that_do_not_fit_are_refused_before_compute(monkeypatch):
  from fedprox_jax.engine import client_states  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(client_states, 'host_budget', lambda: 10_000)
  c = small_config(**{'compression.topk': 0.1, 'compression.error_feedback': True})
  with pytest.raises(errors.ConfigError, match='error feedback keeps a state for every client'):
    validation.check_client_state_fits(c, 1)
  validation.check_client_state_fits(small_config(**{'compression.topk': 0.1}), 1)  # No residual.


def test_a_sweep_varies_bits_and_topk_per_run_in_one_program(tmp_path, caplog):
  caplog.set_level('INFO')
  base = small_config(**{'num_rounds': 3, 'eval_every': 3, 'compression.bits': 8})
  sweep = ml_collections.ConfigDict({
      'repeats': 1,
      'arms': {
          'compressed': {
              'grid': {
                  'compression': {
                      'bits': [2, 8],
                      'topk': [0.1, 1.0]
                  }
              }
          },
          'feedback': {
              'compression': {
                  'topk': 0.1,
                  'error_feedback': True
              }
          },
      }
  })
  experiment.run_sweep(base, sweep, str(tmp_path))
  assert 'Sweep of 5 runs in 2 programs' in caplog.text  # Error feedback is its own.
  with open(tmp_path / 'results.csv', newline='') as f:
    last = [r for r in csv.DictReader(f) if r['round'] == '3']
  by_setting = {(r['bits'], r['topk'], r['arm']): int(r['comm/upload_bytes_total']) for r in last}
  assert len(set(by_setting.values())) == 4  # Each setting its own bytes (EF's equal its topk's).
  assert len({r['local_test/loss'] for r in last}) == 5
  # The figure against the bytes; a table without them is refused with its one line.
  from fedprox_jax import plot  # pylint: disable=g-import-not-at-top
  paths = plot._plot_sweep(tmp_path, ['local_test/accuracy'], 'comm/upload_bytes_total')
  assert all(p.stat().st_size > 0 for p in paths)
  text = (tmp_path / 'results.csv').read_text().replace('comm/upload_bytes_total', 'other')
  (tmp_path / 'results.csv').write_text(text)
  with pytest.raises(ValueError, match='has no comm/upload_bytes_total for every record'):
    plot._plot_sweep(tmp_path, ['local_test/accuracy'], 'comm/upload_bytes_total')
