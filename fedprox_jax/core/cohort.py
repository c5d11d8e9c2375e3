"""Each round's cohort: clients sampled uniformly without replacement, their stragglers and work,
their aggregation weights and their keys, all drawn from the round's key."""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedprox_jax.core import stragglers as stragglers_lib


class Cohort(NamedTuple):
  """The sampled clients of R runs, K each; epochs 0 means no work, weight 0 not aggregated."""
  clients: jax.Array  # [R, K] int32
  epochs: jax.Array  # [R, K] int32
  weights: jax.Array  # [R, K] float32: training examples or batches; 0 when dropped
  keys: jax.Array  # [R, K, 2] uint32, each client's key for this round
  stragglers: jax.Array  # [R, K] bool


def client_weights(sizes: jax.Array, batch_size: int, weight_by_batches: jax.Array) -> jax.Array:
  """Aggregation weight q of clients of these sizes: training examples, or batches (Flower's)."""
  return jnp.where(weight_by_batches, -(-sizes // batch_size), sizes).astype(jnp.float32)


def sample_cohort(round_key: jax.Array, *, sizes: jax.Array, clients_per_round: int,
                  local_epochs: int, batch_size: int, fraction: jax.Array, fixed_count: jax.Array,
                  drop_stragglers: jax.Array, weight_by_batches: jax.Array) -> Cohort:
  """One run's cohort; with `drop_stragglers` (FedAvg's rule) stragglers do no work and are left
  out of the aggregate altogether."""
  k_sample, k_straggle, k_epochs, k_clients = jax.random.split(round_key, 4)
  k = clients_per_round
  clients = jax.random.choice(k_sample, sizes.shape[0], (k,), replace=False).astype(jnp.int32)
  stragglers, epochs = stragglers_lib.draw(k_straggle, k_epochs, k, local_epochs, fraction,
                                           fixed_count)
  dropped = stragglers & drop_stragglers
  epochs = jnp.where(dropped, 0, epochs).astype(jnp.int32)
  weights = jnp.where(dropped, 0.0, client_weights(sizes[clients], batch_size, weight_by_batches))
  keys = jax.vmap(lambda c: jax.random.fold_in(k_clients, c))(clients)
  return Cohort(clients, epochs, weights, keys, stragglers)
