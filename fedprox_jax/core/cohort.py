"""Each round's cohort: clients sampled uniformly without replacement, their stragglers and work,
their aggregation weights and their keys, all drawn from the round's key."""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedprox_jax.core import stragglers as stragglers_lib

# config.draws_version of this release: 2 draws cohorts by Floyd's algorithm (1 by
# jax.random.choice) and splits every client's data by one sort (tasks/federated_data.py).
DRAWS_VERSION = 2


class Cohort(NamedTuple):
  """The sampled clients of R runs, K each; epochs 0 means no work, weight 0 not aggregated."""
  clients: jax.Array  # [R, K] int32
  epochs: jax.Array  # [R, K] int32
  weights: jax.Array  # [R, K] float32: examples, batches, 1 or the algorithm's own; 0 dropped
  keys: jax.Array  # [R, K, 2] uint32, each client's key for this round
  stragglers: jax.Array  # [R, K] bool


# config.algorithm.weighting, as the code each run's hp['weighting'] holds.
EXAMPLES, BATCHES, UNIFORM = 0, 1, 2
WEIGHTINGS = {'examples': EXAMPLES, 'batches': BATCHES, 'uniform': UNIFORM}


def client_weights(sizes: jax.Array, batch_size: int, weighting: jax.Array) -> jax.Array:
  """Aggregation weight q of clients of these sizes: training examples, batches (Flower's), or 1
  each (uniform), by the weighting code."""
  by = jnp.where(weighting == BATCHES, -(-sizes // batch_size), sizes)
  return jnp.where(weighting == UNIFORM, 1, by).astype(jnp.float32)


def sample_without_replacement(key: jax.Array, population: int, k: int) -> jax.Array:
  """k distinct clients of range(population), every ordered k-tuple equally likely, in O(k^2)
  work whatever the population (jax.random.choice permutes all of it: 0.57 s a round at 10^6).

  Floyd's algorithm: for j = n-k .. n-1 draw t uniform in [0, j]; take t unless already taken,
  then j (never taken before). That gives a uniform k-subset; a permutation of the k then gives
  a uniform order.
  """
  k_draw, k_order = jax.random.split(key)
  js = jnp.arange(population - k, population, dtype=jnp.int32)
  draws = jax.random.randint(k_draw, (k,), 0, js + 1, dtype=jnp.int32)

  def take(i, chosen):
    t = draws[i]
    seen = jnp.any((chosen == t) & (jnp.arange(k) < i))
    return chosen.at[i].set(jnp.where(seen, js[i], t))

  chosen = jax.lax.fori_loop(0, k, take, jnp.zeros(k, jnp.int32))
  return jax.random.permutation(k_order, chosen)


def sample_cohort(round_key: jax.Array,
                  *,
                  sizes: jax.Array,
                  clients_per_round: int,
                  local_epochs: int,
                  batch_size: int,
                  fraction: jax.Array,
                  fixed_count: jax.Array,
                  drop_stragglers: jax.Array,
                  weighting: jax.Array,
                  weigh=None) -> Cohort:
  """One run's cohort; with `drop_stragglers` (FedAvg's rule) stragglers do no work and are left
  out of the aggregate altogether. `weigh(sizes)` gives the clients' weights where an algorithm
  has its own rule (else `weighting` chooses)."""
  k_sample, k_straggle, k_epochs, k_clients = jax.random.split(round_key, 4)
  k = clients_per_round
  clients = sample_without_replacement(k_sample, sizes.shape[0], k)
  stragglers, epochs = stragglers_lib.draw(k_straggle, k_epochs, k, local_epochs, fraction,
                                           fixed_count)
  dropped = stragglers & drop_stragglers
  epochs = jnp.where(dropped, 0, epochs).astype(jnp.int32)
  weights = (weigh(sizes[clients])
             if weigh else client_weights(sizes[clients], batch_size, weighting))
  weights = jnp.where(dropped, 0.0, weights.astype(jnp.float32))
  keys = jax.vmap(lambda c: jax.random.fold_in(k_clients, c))(clients)
  return Cohort(clients, epochs, weights, keys, stragglers)
