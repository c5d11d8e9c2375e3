"""Gaussian noise on each run's sum of clipped uploads, and the fixed denominator of DP-FedAvg
(McMahan et al., ICLR 2018).

Once per run per round, inside the compiled program, every coordinate of the sum (every part of
the upload) gets N(0, (z C)^2), C the norm the round's uploads were clipped to and z the update's
noise multiplier (dp_noise.py: sigma, or less under adaptive clipping), drawn from the stage's own
key of (seed, round, run): a resumed run draws the same noise. The algorithm's means then divide
by K, the clients sampled for the run, not by the number that uploaded: a straggler that FedAvg
drops contributes zero. K is fixed by the config and which clients straggle is drawn from the
round's key alone, so neither depends on any client's data, and dividing by them releases nothing
more.
"""
import jax
import jax.numpy as jnp

from fedprox_jax.aggregation import base
from fedprox_jax.aggregation import dp_noise


def server(aggregate: base.Aggregate, state, hp, key):
  k = aggregate.cohort_size
  stddev = dp_noise.update_noise_multiplier(hp, k, jnp) * aggregate.extras['clip_norm']
  leaves, treedef = jax.tree.flatten(aggregate.sums)
  keys = jax.random.split(key, len(leaves))
  noisy = [a + stddev * jax.random.normal(kk, a.shape, a.dtype) for a, kk in zip(leaves, keys)]
  return aggregate._replace(sums=jax.tree.unflatten(treedef, noisy),
                            weight=jnp.asarray(k, jnp.float32)), state, {}


def _on(values):
  return values['privacy.clip_norm'] > 0


STAGE = base.Stage(
    name='gaussian_noise',
    order=90,
    # delta and the target epsilon are the accountant's (the host's), per run.
    fields={
        'privacy.noise_multiplier': 'noise_multiplier',
        'privacy.target_epsilon': 'target_epsilon',
        'privacy.delta': 'delta',
    },
    active=_on,
    server=server)
