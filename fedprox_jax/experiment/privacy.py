"""Client-level DP's accounting, by Google's dp_accounting (never by hand): what each round of a
private run (aggregation/clip.py, aggregation/gaussian_noise.py) costs, and the epsilon of its
records.

Adjacency: replace-one at the client level. Two federations are neighbours when one client's
whole local data set is replaced by any other; every other client is the same. A round samples K
of the N clients uniformly without replacement (the cohort's draw, which reads no data) and
releases the sum of their clipped uploads plus N(0, (sigma C)^2) per coordinate. One client's
upload has norm at most C, so replacing its data moves the sum by at most 2C: the L2 sensitivity is
2C (C under add-or-remove adjacency, which a fixed K does not have), and the Gaussian mechanism's
noise multiplier against that sensitivity is sigma / 2. A round is therefore dp_accounting's
SampledWithoutReplacementDpEvent(N, K, GaussianDpEvent(sigma / 2)) under REPLACE_ONE, which its RDP
accountant composes over the rounds. With adaptive clipping the round also releases a noisy count,
and sigma is the two queries' combined multiplier (aggregation/dp_noise.py), so the event is the
same. Evaluations of the models (test and train accuracy over every client) are the simulator's
own measurements, not something the federation releases: epsilon covers the sequence of global
models.

delta defaults to N^-1.1: below 1/N (a mechanism that published one client's data outright with
probability delta would expose fewer than one client in expectation, N delta = N^-0.1 < 1) for
every N, the usual choice of the DP-FTRL and TensorFlow Federated tutorials.
"""
import functools
import logging

import dp_accounting
from dp_accounting import rdp
import numpy as np

from fedprox_jax import algorithms
from fedprox_jax.aggregation import dp_noise
from fedprox_jax.config_fields import require
from fedprox_jax.errors import ConfigError

DEFAULT_DELTA_EXPONENT = 1.1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def delta(configured: float, num_clients: int) -> float:
  """privacy.delta, or N^-1.1 when 0."""
  return float(configured) if configured > 0 else float(num_clients)**-DEFAULT_DELTA_EXPONENT


def round_event(num_clients: int, cohort_size: int, sigma: float) -> dp_accounting.DpEvent:
  """One round: K of N sampled without replacement, the Gaussian at sigma / 2 (sensitivity 2C)."""
  return dp_accounting.SampledWithoutReplacementDpEvent(num_clients, cohort_size,
                                                        dp_accounting.GaussianDpEvent(sigma / 2))


def _accountant() -> rdp.RdpAccountant:
  return rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)


def epsilon_of(num_clients: int, cohort_size: int, sigma: float, rounds: int,
               delta_: float) -> float:
  """epsilon after `rounds` rounds: dp_accounting's RDP accountant on the rounds' events."""
  if sigma <= 0:
    return float('inf')
  accountant = _accountant()
  accountant.compose(round_event(num_clients, cohort_size, sigma), rounds)
  return float(accountant.get_epsilon(delta_))


class Ledger:
  """A run's epsilon by round: the accountant composes one round's event once, and the RDP of t
  rounds is t times it (composition), converted to epsilon at the run's delta."""

  def __init__(self, num_clients: int, cohort_size: int, sigma: float, delta_: float):
    self.sigma, self.delta = float(sigma), delta_
    self._rdp = None
    if sigma > 0:
      accountant = _accountant()
      accountant.compose(round_event(num_clients, cohort_size, sigma), 1)
      # The accountant's RDP of one round at each of its orders (what compose(event, t) adds t
      # times): tests/privacy_test.py checks the epsilons against fresh compositions.
      self._orders, self._rdp = accountant._orders, accountant._rdp  # pylint: disable=protected-access

  def epsilon(self, rounds: int) -> float:
    if rounds <= 0:
      return 0.0  # Nothing released yet.
    if self._rdp is None:
      return float('inf')
    return float(rdp.compute_epsilon(self._orders, rounds * self._rdp, self.delta)[0])


# The noise multipliers a target epsilon is calibrated within: below the lower end the model gets
# next to no noise (a target that large is no privacy); past the upper one it is all noise, and
# dp_accounting's arithmetic overflows a little further (near 2^30).
SIGMA_RANGE = (1e-2, 1e6)


@functools.lru_cache(maxsize=256)
def calibrate(num_clients: int, cohort_size: int, rounds: int, target_epsilon: float,
              delta_: float) -> float:
  """The smallest sigma whose `rounds` rounds end at epsilon <= target_epsilon (ConfigError where
  no sigma of SIGMA_RANGE is that smallest one)."""
  where = (f'privacy.target_epsilon = {target_epsilon:g} over {rounds} rounds of {cohort_size} of '
           f'{num_clients} clients at delta {delta_:.3g}')
  low, high = SIGMA_RANGE
  try:
    if epsilon_of(num_clients, cohort_size, high, rounds, delta_) > target_epsilon:
      raise ConfigError(f'{where} needs a noise multiplier above {high:g}, which leaves the model '
                        'nothing but noise: ask for a larger epsilon or delta, or fewer rounds')
    if epsilon_of(num_clients, cohort_size, low, rounds, delta_) <= target_epsilon:
      raise ConfigError(f'{where} is met by a noise multiplier of {low:g} already, next to no '
                        'noise: ask for a smaller epsilon, or set privacy.noise_multiplier')
    sigma = dp_accounting.calibrate_dp_mechanism(
        _accountant,
        lambda s: dp_accounting.SelfComposedDpEvent(round_event(num_clients, cohort_size, s), rounds
                                                   ),
        target_epsilon,
        delta_,
        bracket_interval=dp_accounting.ExplicitBracketInterval(low, high),
        tol=1e-4)
    # Brent's method stops within tol of the boundary on either side: step up to the safe side.
    while epsilon_of(num_clients, cohort_size, sigma, rounds, delta_) > target_epsilon:
      sigma *= 1.0 + 1e-4
  except ConfigError:
    raise
  except (ValueError, ArithmeticError) as e:  # dp_accounting's own arithmetic gave up.
    raise ConfigError(f'{where} cannot be calibrated (dp_accounting: {e}): ask for a target '
                      'between 0.01 and 100') from None
  return float(sigma)


def check_targets(configs) -> None:
  """Calibrates each config's target epsilon (those whose task says its number of clients up
  front) and refuses one that cannot be reached or that adaptive clipping cannot split, before any
  compute. (Other tasks' runs are checked once their noise is final, before their first round.)"""
  for c in configs:
    p, n = c.privacy, c.data.get('num_clients', 0)
    if p.clip_norm > 0 and p.target_epsilon > 0 and n:
      sigma = calibrate(n, c.clients_per_round, c.num_rounds, p.target_epsilon, delta(p.delta, n))
      check_split(
          {
              'noise_multiplier': sigma,
              'target_quantile': p.target_quantile,
              'clipped_count_stddev': p.clipped_count_stddev
          }, c.clients_per_round)


def with_calibrated_noise(runs, num_clients: int, cohort_size: int, rounds: int):
  """`runs` (RunSettings) with the noise multiplier of those with a target epsilon calibrated to
  it for `rounds` rounds (checked once the runs' noise is final: rounds.run_rounds)."""
  out, told = [], set()
  for run in runs:
    hp = run.hp
    if hp.get('target_epsilon', 0) > 0:
      d = delta(hp['delta'], num_clients)
      sigma = calibrate(num_clients, cohort_size, rounds, hp['target_epsilon'], d)
      if (sigma, d) not in told:  # Once per value, not once per run of a sweep.
        told.add((sigma, d))
        logging.info(
            'Privacy: noise multiplier %.4f reaches epsilon %.4f (target %g) at delta %.3g after '
            '%d rounds of %d of %d clients', sigma,
            epsilon_of(num_clients, cohort_size, sigma, rounds, d), hp['target_epsilon'], d, rounds,
            cohort_size, num_clients)
      run = run._replace(hp={**hp, 'noise_multiplier': sigma})
    out.append(run)
  return out


def check_split(hp: dict, cohort_size: int) -> None:
  """Adaptive clipping needs sigma < 2 sigma_b (its count's noise): refused otherwise."""
  if 'noise_multiplier' not in hp:
    return
  z = dp_noise.update_noise_multiplier(hp, cohort_size)
  if not np.isfinite(z):
    b = dp_noise.count_stddev(hp, cohort_size)
    raise ConfigError(
        f'privacy.noise_multiplier {hp["noise_multiplier"]:.4g} is not below 2 x the clipped '
        f'count\'s noise ({b:.4g}; privacy.clipped_count_stddev, 0: K / 20): adaptive clipping '
        'would spend the whole budget on the count. Raise privacy.clipped_count_stddev, lower the '
        'noise (or raise target_epsilon), or set privacy.target_quantile = 0')


def validate(c) -> None:
  """Refuses a config's privacy group where it is invalid or where DP would not hold, before any
  compute (ConfigError naming the field)."""
  require(
      'privacy' in c, 'privacy', 'is missing: the config must hold the privacy group (build it '
      'on a preset, whose privacy.clip_norm = 0 keeps DP off)')
  p = c.privacy
  for field in ('clip_norm', 'noise_multiplier', 'target_epsilon', 'clip_learning_rate',
                'clipped_count_stddev'):
    require(p[field] >= 0, f'privacy.{field}', f'= {p[field]} must be >= 0')
    require(p[field] <= FLOAT32_MAX, f'privacy.{field}',
            f'= {p[field]} is past float32 (the device\'s), at most {FLOAT32_MAX:.3g}')
  require(
      p.noise_multiplier <= SIGMA_RANGE[1], 'privacy.noise_multiplier',
      f'= {p.noise_multiplier} is past {SIGMA_RANGE[1]:g}: the model would be nothing but '
      'noise (and dp_accounting cannot account for it)')
  require(0 <= p.delta < 1, 'privacy.delta', f'= {p.delta} must be in (0, 1), or 0 for N^-1.1')
  require(0 <= p.target_quantile < 1, 'privacy.target_quantile',
          f'= {p.target_quantile} must be in (0, 1), or 0 for a fixed clip norm')
  if p.clip_norm == 0:
    for field in ('noise_multiplier', 'target_epsilon', 'target_quantile'):
      require(p[field] == 0, f'privacy.{field}',
              f'= {p[field]} needs privacy.clip_norm > 0 (unclipped uploads have no sensitivity)')
    return
  algorithm = algorithms.get(c.algorithm.name)
  on = f'privacy.clip_norm = {p.clip_norm} (client-level DP)'
  require(not algorithm.private_refusal, 'algorithm.name',
          f'= {c.algorithm.name!r} does not take {on}: {algorithm.private_refusal}')
  require(
      algorithm.client_weights is None and c.algorithm.weighting == 'uniform',
      'algorithm.weighting', f'= {c.algorithm.weighting!r} with {on}: weights by data size give '
      "one client unbounded influence on the sum; set it to 'uniform'")
  rule = algorithm.round_rule
  require(
      not (rule and c.algorithm[rule.enabled_by]), f'algorithm.{rule and rule.enabled_by}',
      f'with {on}: the rule reads every client\'s {rule and rule.metric}, which DP does not '
      'cover; turn it off')
  require(
      p.noise_multiplier == 0 or p.target_epsilon == 0, 'privacy.target_epsilon',
      f'= {p.target_epsilon} and privacy.noise_multiplier = {p.noise_multiplier}: set one (the '
      'target calibrates the noise)')
  num_clients = c.data.get('num_clients', 0)
  if num_clients and p.delta >= 1 / num_clients:
    logging.warning(
        'config.privacy.delta = %g is not below 1/N = %g: a mechanism may then publish a '
        "client's data outright with the probability delta; 0 takes N^-1.1", p.delta,
        1 / num_clients)
  if p.noise_multiplier > 0:
    hp = {
        'noise_multiplier': p.noise_multiplier,
        'target_quantile': p.target_quantile,
        'clipped_count_stddev': p.clipped_count_stddev
    }
    check_split(hp, c.clients_per_round)
  check_targets([c])
