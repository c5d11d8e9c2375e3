"""Accuracy against epsilon: DP-FedAvg and DP-FedProx at epsilon 1, 2, 4 and 8 (delta 1e-7), both
clipped alike without noise, and both without DP (uniform weights, no clipping), 3 seeds, on the
synthetic population of the synthetic:private preset (one shared model) at any size:

    python -m fedprox_jax.sweep --config=synthetic:private --sweep=privacy \\
        --workdir=/tmp/privacy/1e4
    python -m fedprox_jax.sweep --config=synthetic:private --config.data.num_clients=100000 \\
        --config.clients_per_round=1000 --sweep=privacy --workdir=/tmp/privacy/1e5

and on MNIST's 1,000 clients (variant mnist: K = 10, a fixed clip norm, since adaptive clipping's
count noise K / 20 = 0.5 cannot take its share of the noise these epsilons need):

    python -m fedprox_jax.sweep --config=mnist_fedprox --sweep=privacy:mnist \\
        --workdir=/tmp/privacy/mnist

The arms that clip share one program (epsilon is a traced value), those without DP another.
"""
import ml_collections

VARIANTS = ('mnist',)
EPSILONS = [1.0, 2.0, 4.0, 8.0]
# FedProx's mu: the local rate times mu stays well below 1 (synthetic: rate 1.0).
MU = {None: 0.1, 'mnist': 1.0}
# MNIST's fixed clip norm (the best of 0.03, 0.1, 0.5 and 2 for DP-FedProx at epsilon 8, seed
# 100: test accuracy 0.581, 0.603, 0.523, 0.485 at round 100) and its delta.
MNIST = {'privacy': {'clip_norm': 0.1, 'delta': 1e-7}}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, *VARIANTS):
    raise ValueError(f'unknown variant {variant!r}: none (synthetic:private) or mnist')
  s = ml_collections.ConfigDict()
  s.repeats = 3
  arms = {}
  for name, mu in (('fedavg', 0.0), ('fedprox', MU[variant])):
    # MNIST's FedAvg drops its stragglers (90%), as the paper's does; the synthetic task has none.
    algorithm = {'name': name, 'mu': mu, 'drop_stragglers': variant == 'mnist' and mu == 0}
    private = {'algorithm': dict(algorithm), 'grid': {'privacy': {'target_epsilon': EPSILONS}}}
    open_ = {
        'algorithm': dict(algorithm),
        'privacy': {
            'clip_norm': 0.0,
            'target_quantile': 0.0,
            'target_epsilon': 0.0
        }
    }
    # Clipped as the DP arms are, without noise (epsilon infinite): what clipping alone costs.
    clipped = {'algorithm': dict(algorithm), 'privacy': {'target_epsilon': 0.0}}
    if variant == 'mnist':
      for arm in (private, open_, clipped):
        arm['algorithm']['weighting'] = 'uniform'
      private['privacy'] = {**MNIST['privacy'], 'target_quantile': 0.0}
      clipped['privacy'] = {**MNIST['privacy'], 'target_quantile': 0.0, 'target_epsilon': 0.0}
    arms[f'dp_{name}'], arms[f'clipped_{name}'], arms[name] = private, clipped, open_
  s.arms = ml_collections.ConfigDict(arms)
  s.grid = ml_collections.ConfigDict()
  s.max_runs_per_chunk = 0
  s.cpu_devices = 0
  return s
