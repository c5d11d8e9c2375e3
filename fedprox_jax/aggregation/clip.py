"""Clipping (client side) and adaptive clipping (server side): client-level DP's bound on what one
client can move the round's sum by.

Each aggregated client's whole upload (every part together: SCAFFOLD's delta and control-variate
delta alike) is scaled to L2 norm at most C, the run's current clip norm. C starts at
privacy.clip_norm. With privacy.target_quantile gamma > 0, it follows Andrew et al. (NeurIPS 2021,
"Differentially Private Learning with Adaptive Clipping"): with b the noisy fraction of the round's
K sampled clients whose uploads were not clipped, C <- C exp(-eta (b - gamma)) (geometric update,
eta = privacy.clip_learning_rate), so C tracks the gamma-quantile of the upload norms. The count's
noise (standard deviation sigma_b, dp_noise.py) is drawn here, from the stage's own key of (seed,
round, run).
"""
import jax
import jax.numpy as jnp

from fedprox_jax.aggregation import base
from fedprox_jax.aggregation import dp_noise


def init_state(hp):
  return {'clip_norm': jnp.asarray(hp['clip_norm'], jnp.float32)}


def client(upload, state, hp, key, client_state):
  del hp, key
  c = state['clip_norm']
  norm = base.tree_norm(upload)
  scale = jnp.minimum(1.0, c / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny))
  return jax.tree.map(lambda u: u * scale, upload), {
      'unclipped': (norm <= c).astype(jnp.float32)
  }, client_state


def server(aggregate: base.Aggregate, state, hp, key):
  c, k = state['clip_norm'], aggregate.cohort_size
  noisy_count = aggregate.extras['unclipped'] + dp_noise.count_stddev(
      hp, k, jnp) * jax.random.normal(key, (), jnp.float32)
  unclipped = noisy_count / k
  adapted = c * jnp.exp(-hp['clip_learning_rate'] * (unclipped - hp['target_quantile']))
  new_c = jnp.where(hp['target_quantile'] > 0, adapted, c)
  # The later stages read the norm this round's uploads were clipped to.
  extras = {**aggregate.extras, 'clip_norm': c}
  # The noisy count is released only where it adapts C (and is accounted for): a fixed C's round
  # records no count at all (NaN, which the records leave out).
  return aggregate._replace(extras=extras), {
      'clip_norm': new_c
  }, {
      'privacy/clip_norm': c,
      'privacy/unclipped_fraction': jnp.where(hp['target_quantile'] > 0, unclipped, jnp.nan)
  }


def _on(values):
  return values['privacy.clip_norm'] > 0


STAGE = base.Stage(name='clip',
                   order=10,
                   fields={
                       'privacy.clip_norm': 'clip_norm',
                       'privacy.target_quantile': 'target_quantile',
                       'privacy.clip_learning_rate': 'clip_learning_rate',
                       'privacy.clipped_count_stddev': 'clipped_count_stddev',
                   },
                   active=_on,
                   init_state=init_state,
                   client=client,
                   server=server)
