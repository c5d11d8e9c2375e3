"""What an algorithm is: a handful of pure functions over pytrees, run inside the round program.

They run per run (vmapped over the runs of a sweep) and per client job (inside the vmapped lanes),
never as per-client Python. With w a run's global parameters and y_i client i's parameters after
its tau_i local steps:

- init_state(params, hp): the algorithm's server state (SCAFFOLD: c); () for none.
- init_client_state(params): one client's persistent state (SCAFFOLD: c_i), or None when the
  algorithm keeps none (then no client state exists at all).
- correction(state, client_state, hp): added to every local gradient (SCAFFOLD: c - c_i); None for
  nothing. The proximal term mu (y - w) and weight decay belong to the local solver, whatever the
  algorithm (core/client.py).
- upload(result, state, client_state, hp) -> (upload, new client state): what client i sends after
  its steps (its delta, plus e.g. its step count or control-variate delta).
- server_delta(totals, state, hp) -> (Delta_t, new state): the update the server optimizer applies,
  from the sums of the uploads.

Aggregation is the engine's (engine/server.py): for each run it sums q_i * upload_i over the clients
aggregated this round (q_i > 0, training examples or batches), masking the others, and hands those
sums over with sum_S q_i and the population's sum_j q_j. `hp` is the run's dict of hyperparameters
(traced floats: learning_rate, weight_decay, mu, the server's and the algorithm's own), so every one
of them can differ between the runs of one compiled program.
"""
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

Pytree = Any


class ClientResult(NamedTuple):
  """A client's work, as the algorithm sees it at the end of its steps."""
  delta: Pytree  # y_i - w
  steps: jax.Array  # tau_i, int32
  learning_rate: jax.Array
  weight_decay: jax.Array
  mu: jax.Array


class Totals(NamedTuple):
  """A run's aggregated uploads."""
  sums: Pytree  # sum over the aggregated clients S of q_i * upload_i
  weight: jax.Array  # sum_{i in S} q_i
  population_weight: jax.Array  # sum_{j = 1..N} q_j over every client


class Algorithm(NamedTuple):
  name: str  # config.algorithm.name
  init_state: Callable[[Pytree, dict], Pytree]
  upload: Callable[[ClientResult, Pytree, Pytree, dict], tuple[Pytree, Pytree]]
  server_delta: Callable[[Totals, Pytree, dict], tuple[Pytree, Pytree]]
  init_client_state: Callable[[Pytree], Pytree] | None = None
  correction: Callable[[Pytree, Pytree, dict], Pytree] | None = None
  # Config fields only this algorithm reads (others warn when they are set for it).
  own_fields: tuple[str, ...] = ()
  # Per-run float hyperparameters of its own: config field -> key in hp.
  hyperparameters: tuple[tuple[str, str], ...] = ()

  def structure(self) -> tuple:
    """What makes a program: algorithms with the same functions share one."""
    return (self.init_state, self.upload, self.server_delta, self.init_client_state,
            self.correction, self.hyperparameters)


def no_state(params, hp):
  del params, hp
  return ()


def mean(sums, weight):
  """sums / weight, with an empty aggregate (weight 0) giving 0 rather than NaN."""
  safe = jnp.maximum(weight, jnp.finfo(jnp.float32).tiny)
  return jax.tree.map(lambda s: jnp.where(weight > 0, s / safe, 0.0), sums)
