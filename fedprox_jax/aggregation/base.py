"""What an aggregation stage is: a step between a client's upload and the server's Delta_t.

Every algorithm's uploads pass through the same chain. A stage may have a client side, run in the
lane at the end of each client job on the algorithm's whole upload (privacy's clipping), and a
server side, run per run on the round's sums before the algorithm sees them (privacy's noise and
fixed denominator). Both run inside the compiled round, vmapped like the rest:

- client(upload, state, hp) -> (upload, extras): the upload as the stage passes it on, and values
  of its own ({name: scalar}) that the engine sums over the run's aggregated clients, unweighted
  (clipping: whether the upload was left unclipped).
- server(aggregate, state, hp, key) -> (aggregate, state, stats): the run's Aggregate as it
  passes it on, the stage's new server state, and {name: scalar} to record each round. `key` is
  the stage's own key of (seed, round, run), so a resumed run draws what an undisturbed one does.
- init_state(hp) -> the stage's server state for a run ({} for none): checkpointed with the
  server's.

A stage's hyperparameters are traced per-run values (hp[key], config field -> key in `fields`);
whether it runs at all is the program's structure (`active`, over its fields' values).
"""
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

Pytree = Any


class Aggregate(NamedTuple):
  """A run's round, as the server stages pass it on."""
  sums: Pytree  # sum over the aggregated clients of q_i * upload_i
  weight: jax.Array  # sum_S q_i: the denominator of the algorithm's means
  extras: dict  # the client sides' extras, summed over the aggregated clients
  cohort_size: jax.Array  # K, the clients sampled for the run this round


class Stage(NamedTuple):
  name: str
  order: int  # Place in the chain: lower runs first (client sides), and first on the server.
  fields: dict  # config field -> hp key of its per-run hyperparameters
  active: Callable[[dict], bool]  # From {config field: value}: whether the program has it.
  init_state: Callable[[dict], Pytree] = lambda hp: {}
  client: Callable | None = None
  server: Callable | None = None


def tree_norm(tree) -> jax.Array:
  """The L2 norm of a pytree's every value together."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))
