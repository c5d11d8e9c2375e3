"""What an aggregation stage is: a step between a client's upload and the server's Delta_t.

Every algorithm's uploads pass through the same chain. A stage may have a client side, run in the
lane at the end of each client job on the algorithm's whole upload (privacy's clipping), and a
server side, run per run on the round's sums before the algorithm sees them (privacy's noise and
fixed denominator). Both run inside the compiled round, vmapped like the rest:

- client(upload, state, hp, key, client_state) -> (upload, extras, client_state): the upload as
  the stage passes it on, values of its own ({name: scalar}) that the engine sums over the run's
  aggregated clients, unweighted (clipping: whether the upload was left unclipped), and the
  client's new state of the stage. `key` is the client's own key of the round, from (seed, round,
  client id) (quantization's rounding); `client_state` is what init_client_state made, as the
  client's last upload left it (error feedback's residual), or None for a stage that keeps none.
- server(aggregate, state, hp, key) -> (aggregate, state, stats): the run's Aggregate as it
  passes it on, the stage's new server state, and {name: scalar} to record each round. `key` is
  the stage's own key of (seed, round, run), so a resumed run draws what an undisturbed one does.
- init_state(hp) -> the stage's server state for a run ({} for none): checkpointed with the
  server's.
- init_client_state(upload_shape) -> one client's state of the stage before its first upload
  (None: the stage keeps none), from the shapes of the algorithm's upload: kept for every client
  with the algorithm's own client state (aggregation/client_state.py).

A stage's hyperparameters are traced per-run values (hp[key], config field -> key in `fields`,
as float32, or as `encode[key]` of the config's value says); whether it runs at all is the
program's structure (`active`, over its fields' values).
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
  init_client_state: Callable | None = None
  # hp key -> the float a config value is given to the program as (default: float(value)).
  encode: dict = {}
  # Its client side skips work with lax.cond where a run does not ask for it: the lanes then run
  # it unbatched where they can (one lane), since vmapped a cond computes both branches.
  skips_work: bool = False


def tree_norm(tree) -> jax.Array:
  """The L2 norm of a pytree's every value together."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))
