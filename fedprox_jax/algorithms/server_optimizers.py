"""Server optimizers (Reddi et al., ICLR 2021, "Adaptive Federated Optimization", Algorithm 2),
each an optax GradientTransformation fed the pseudo-gradient -Delta_t of a round.

- sgd: w += eta Delta (eta = 1 replaces the model by the clients' weighted mean: FedAvg).
- momentum (FedAvgM): m = beta m + Delta, w += eta m.
- adam, yogi, adagrad: m = b1 m + (1 - b1) Delta and w += eta m / (sqrt(v) + eps), with
  adam:    v = b2 v + (1 - b2) Delta^2
  yogi:    v = v - (1 - b2) Delta^2 sign(v - Delta^2)
  adagrad: v = v + Delta^2
  m starting at 0, v at eps^2, and no bias correction.
optax's sgd (with its trace for momentum) is exactly the first two. Its adam and yogi correct the
bias, its yogi starts v at 1e-6 and its adagrad has no momentum and puts eps inside the root, so the
last three are written here. Every hyperparameter may be a traced per-run value.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Optimizer -> the server.* fields it reads besides server.learning_rate.
OPTIMIZERS = {
    'sgd': (),
    'momentum': ('momentum',),
    'adam': ('b1', 'b2', 'eps'),
    'yogi': ('b1', 'b2', 'eps'),
    'adagrad': ('b1', 'eps')
}
# server.learning_rate = 0 takes the optimizer's own default: sgd's 1 is FedAvg's replacement of the
# model by the clients' mean; the others were chosen on the default MNIST task (docs/results.md).
DEFAULT_LEARNING_RATES = {
    'sgd': 1.0,
    'momentum': 0.03,
    'adam': 0.001,
    'yogi': 0.001,
    'adagrad': 0.01
}
# The per-run hyperparameter key of each server.* field.
HYPERPARAMETERS = {
    'learning_rate': 'server_learning_rate',
    'momentum': 'server_momentum',
    'b1': 'server_b1',
    'b2': 'server_b2',
    'eps': 'server_eps'
}


class AdaptiveState(NamedTuple):
  m: optax.Updates
  v: optax.Updates


def scale_by_adaptive(variant: str, b1, b2, eps) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) of the pseudo-gradient g = -Delta (v is even in g, m odd)."""

  def init(params):
    return AdaptiveState(m=jax.tree.map(jnp.zeros_like, params),
                         v=jax.tree.map(lambda p: jnp.full_like(p, eps * eps), params))

  def second_moment(v, g2):
    if variant == 'adam':
      return b2 * v + (1 - b2) * g2
    if variant == 'yogi':
      return v - (1 - b2) * g2 * jnp.sign(v - g2)
    return v + g2  # adagrad

  def update(updates, state, params=None):
    del params
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.m, updates)
    v = jax.tree.map(lambda v, g: second_moment(v, g * g), state.v, updates)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), m, v)
    return out, AdaptiveState(m, v)

  return optax.GradientTransformation(init, update)


def learning_rate(name: str, configured: float) -> float:
  """server.learning_rate, with 0 meaning the optimizer's default."""
  return configured or DEFAULT_LEARNING_RATES[name]


def make(name: str, hp: dict) -> optax.GradientTransformation:
  """The server optimizer `name` with the run's hyperparameters (traced values welcome)."""
  eta = hp['server_learning_rate']
  if name == 'sgd':
    return optax.sgd(eta)
  if name == 'momentum':
    return optax.sgd(eta, momentum=hp['server_momentum'])
  return optax.chain(scale_by_adaptive(name, hp['server_b1'], hp['server_b2'], hp['server_eps']),
                     optax.scale_by_learning_rate(eta))
