"""What an algorithm is: its own hyperparameters, declared once, and a handful of pure functions
over pytrees, run inside the round program.

The functions run per run (vmapped over the runs of a sweep) and per client job (inside the
vmapped lanes), never as per-client Python. With w a run's global parameters and y_i client i's
parameters after its tau_i local steps:

- init_state(params, hp): the algorithm's server state (SCAFFOLD: c); () for none.
- init_client_state(params): one client's persistent state before its first round, from its
  run's initial model (SCAFFOLD: c_i = 0), or None when the algorithm keeps none (then no client
  state exists at all).
- local_loss(model, params, batch, context): a client's objective on one mini-batch; None is the
  default, mean cross-entropy + mu/2 ||y - w||^2 (core/client.py, whose parts an algorithm's own
  loss may reuse). `model(params, x)` gives core.model.Outputs (logits, and the representation of
  models that declare one); `context` holds w, the server and client states and hp.
- correction(state, client_state, hp): added to every local gradient (SCAFFOLD: c - c_i); None for
  nothing. Weight decay (coupled) is the local optimizer's, whatever the algorithm.
- before_steps(model, params, batch, context): per-batch sums that a client computes at the global
  model over its local training data, before its steps (q-FFL: its loss); the engine hands their
  means over the client's examples to upload as ClientResult.before.
- upload(result, state, client_state, hp) -> (upload, new client state): what client i sends after
  its steps (its delta, plus e.g. its step count or control-variate delta).
- after_send(sent, client_state, new_client_state, hp): the client's new state from what it
  actually sent, where the aggregation stages (compression, clipping) changed its upload
  (SCAFFOLD: c_i plus the dc sent, so that c stays the mean of the c_i); None keeps the state
  that upload gave. Run only where a stage has a client side.
- server_delta(totals, state, hp) -> (Delta_t, new state): the update the server optimizer applies,
  from the sums of the uploads.
- client_weights(sizes, batch_size, hp): the aggregation weight q_i of clients of these sizes;
  None takes config.algorithm.weighting (training examples, batches, or uniform).
- round_rule: a host-side rule run between rounds that moves hyperparameters (FedProx's adaptive
  mu); None for none.
- private_refusal: why client-level DP does not hold for it ('' where it does: its server update
  reads its uploads only through their sums, divided by a count that reads no data).
- downloads: the entries of its server state sent to every sampled client with the model.

Aggregation is the engine's (engine/server.py): for each run it sums q_i * upload_i over the clients
aggregated this round (q_i > 0), masking the others, and hands those sums over with sum_S q_i and
the population's sum_j q_j. `hp` is the run's dict of hyperparameters (traced values: learning_rate,
weight_decay, mu, the server's and the algorithm's own), so each can differ between the runs of
one compiled program.

An algorithm's own hyperparameter is declared once, in its file (Hyperparameter): from that come
its config field (config.algorithm.<name>), its validation, the warning when another algorithm's
run sets it, its default for workdirs made before it existed, its results.csv column, its place
in a sweep (a traced per-run value, or part of the program's structure) and its row in the docs.
"""
from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Pytree = Any


class Hyperparameter(NamedTuple):
  """One of an algorithm's own settings: config.algorithm.<name>."""
  name: str
  default: bool | int | float | str
  valid: Callable[[Any], bool]  # Whether a value is allowed (its type is the default's).
  requirement: str  # What `valid` asks, for the error: 'must be > 0'.
  doc: str  # One line for the docs' field table.
  # True: hp[name] is a traced value of the program, so the runs of one sweep may differ in it.
  # False: a Python value fixed per program (runs that differ compile one program each).
  per_run: bool = True


class ClientResult(NamedTuple):
  """A client's work, as the algorithm sees it at the end of its steps."""
  delta: Pytree  # y_i - w
  steps: jax.Array  # tau_i, int32
  learning_rate: jax.Array
  weight_decay: jax.Array
  mu: jax.Array
  params: Pytree = None  # y_i itself
  before: Pytree = None  # The means of before_steps' sums over its examples (None without it)


class Batch(NamedTuple):
  """A client's mini-batch: padded to the batch size, mask 1 on its real examples."""
  x: jax.Array
  y: jax.Array
  mask: jax.Array


class LocalContext(NamedTuple):
  """What a client's objective may read besides its parameters and batch."""
  anchor: Pytree  # w, the run's global parameters at the round's start
  state: Pytree  # the algorithm's server state
  client_state: Pytree  # the client's persistent state (None without one)
  hp: dict


class Totals(NamedTuple):
  """A run's aggregated uploads."""
  sums: Pytree  # sum over the aggregated clients S of q_i * upload_i
  weight: jax.Array  # sum_{i in S} q_i
  population_weight: jax.Array  # sum_{j = 1..N} q_j over every client


class RoundRule(NamedTuple):
  """A host-side rule run after each round's evaluation, per run, moving hyperparameters.

  Its state is a NamedTuple of [R] NumPy arrays (checkpoints keep it under 'adaptive');
  `enabled_by` names the bool hyperparameter that turns it on for a run, `metric` the record
  entry it reads (so the run must record it every round).
  """
  enabled_by: str
  metric: str
  initial: Callable[[dict], Any]  # From the runs' hp ({name: [R]}).
  update: Callable[[Any, np.ndarray, np.ndarray], Any]  # (state, metric [R], enabled [R])
  hyperparameters: Callable[[Any], dict]  # The hp entries it sets now: {name: [R]}.


class Algorithm(NamedTuple):
  name: str  # config.algorithm.name
  init_state: Callable[[Pytree, dict], Pytree]
  upload: Callable[[ClientResult, Pytree, Pytree, dict], tuple[Pytree, Pytree]]
  server_delta: Callable[[Totals, Pytree, dict], tuple[Pytree, Pytree]]
  init_client_state: Callable[[Pytree], Pytree] | None = None
  correction: Callable[[Pytree, Pytree, dict], Pytree] | None = None
  local_loss: Callable | None = None
  before_steps: Callable | None = None
  client_weights: Callable[[jax.Array, int, dict], jax.Array] | None = None
  hyperparameters: tuple[Hyperparameter, ...] = ()
  round_rule: RoundRule | None = None
  # Whether local_loss reads the model's representation (refused on models without one).
  needs_representation: bool = False
  # Whether its paper applies Delta_t as it is (server.optimizer sgd at rate 1): another server
  # optimizer or rate runs a variant of it, which the run is warned about.
  paper_server_step: bool = False
  # Why client-level DP (clipped uploads, noise on their sum, a fixed denominator K) does not
  # hold for it: '' where its server update is a mean of its clipped uploads, so noise on their
  # sum bounds what one client moves it by (privacy is refused for it otherwise).
  private_refusal: str = ''
  # The entries of its server state that each sampled client receives with the model (SCAFFOLD's
  # c): counted in comm/download_bytes.
  downloads: tuple[str, ...] = ()
  after_send: Callable[[Pytree, Pytree, Pytree, dict], Pytree] | None = None

  def structure(self) -> tuple:
    """What makes a program: algorithms with the same functions share one."""
    return (self.init_state, self.upload, self.server_delta, self.init_client_state,
            self.correction, self.local_loss, self.before_steps, self.client_weights,
            self.round_rule, self.after_send,
            tuple((h.name, h.per_run) for h in self.hyperparameters))

  def with_fixed(self, fixed: dict) -> 'Algorithm':
    """The algorithm with its hyperparameters that are not per run (`fixed`: name -> value) put
    into every hp its functions see, as Python values."""
    if not fixed:
      return self
    bind = lambda f, at: None if f is None else _with_hp(f, at, fixed)
    return self._replace(init_state=bind(self.init_state, 1),
                         upload=bind(self.upload, 3),
                         server_delta=bind(self.server_delta, 2),
                         correction=bind(self.correction, 2),
                         local_loss=_with_context_hp(self.local_loss, fixed),
                         before_steps=_with_context_hp(self.before_steps, fixed),
                         client_weights=bind(self.client_weights, 2),
                         after_send=bind(self.after_send, 3))


def _with_hp(f, position: int, fixed: dict):

  def bound(*args):
    args = list(args)
    args[position] = {**args[position], **fixed}
    return f(*args)

  return bound


def _with_context_hp(f, fixed: dict):
  if f is None:
    return None
  return lambda model, params, batch, context: f(model, params, batch,
                                                 context._replace(hp={
                                                     **context.hp,
                                                     **fixed
                                                 }))


def no_state(params, hp):
  del params, hp
  return ()


def mean(sums, weight):
  """sums / weight, with an empty aggregate (weight 0) giving 0 rather than NaN."""
  safe = jnp.maximum(weight, jnp.finfo(jnp.float32).tiny)
  return jax.tree.map(lambda s: jnp.where(weight > 0, s / safe, 0.0), sums)


def delta_upload(result: ClientResult, state, client_state, hp):
  """FedAvg's upload: the client's delta alone."""
  del state, hp
  return {'delta': result.delta}, client_state


def mean_delta(totals: Totals, state, hp):
  """FedAvg's Delta_t: the weighted mean of the deltas."""
  del hp
  return mean(totals.sums['delta'], totals.weight), state
