"""Systems heterogeneity: which sampled clients straggle, and how much work each does.

A straggler is drawn with probability `fraction` (the Flower baseline) or, with `fixed_count`,
exactly round(K * fraction) of the K clients are (the paper's code). A straggler does a number of
local epochs uniform in {1, ..., E - 1}; the others do all E. Whether stragglers' partial work is
then dropped (FedAvg's rule) is the cohort's choice (cohort.py).
"""
import jax
import jax.numpy as jnp


def draw(straggle_key: jax.Array, epochs_key: jax.Array, num_clients: int, local_epochs: int,
         fraction: jax.Array, fixed_count: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(stragglers [K] bool, epochs [K] int32) for K = num_clients sampled clients."""
  u = jax.random.uniform(straggle_key, (num_clients,))
  rank = jnp.argsort(jnp.argsort(u))
  num_fixed = jnp.floor(num_clients * fraction + 0.5).astype(jnp.int32)
  stragglers = jnp.where(fixed_count, rank < num_fixed, u < fraction)
  # With E = 1 there is no smaller amount of work, so a straggler does the one epoch.
  partial = jax.random.randint(epochs_key, (num_clients,), 1, max(local_epochs, 2))
  partial = jnp.minimum(partial, local_epochs)
  return stragglers, jnp.where(stragglers, partial, local_epochs).astype(jnp.int32)
