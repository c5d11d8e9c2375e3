"""A plain, sequential reference for MOON (Li, He and Song, CVPR 2021), written from the paper's
equations on the local-training protocol of tests/reference_protocol.py, and a tiny MLP whose hidden
layer is the representation MOON contrasts.

Each client k keeps its previous local model prev_k; before its first training it has none, and
the global model w stands in for it. A local step's batch objective is the default one (masked
mean cross-entropy + mu/2 ||y - w||^2) plus moon_mu times the masked mean over the real examples
of l_con = -log(e^(sim(z, z_glob) / T) / (e^(sim(z, z_glob) / T) + e^(sim(z, z_prev) / T))), where
z, z_glob and z_prev are the example's representations under y, w and prev_k (the last two are
constants of the step), and sim is the cosine similarity with each norm floored at 1e-8. A client
that did at least one step keeps its final y_k as prev_k. The server is FedAvg's:
Delta_t = sum_S q_k (y_k - w) / sum_S q_k, applied by the SGD server optimizer.
"""
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tests import reference_protocol as protocol

NORM_FLOOR = 1e-8


class MoonState(NamedTuple):
  params: Any  # pytree of float32 [R, ...]
  prev: Any  # pytree of float32 [R, N, ...]: every client's previous local model
  has_prev: Any  # bool [R, N]: whether prev holds one (else w stands in for it)


def _seed_of(key_or_seed):
  """A NumPy seed from an int or a JAX key (raw uint32 or typed)."""
  if isinstance(key_or_seed, int | np.integer):
    return int(key_or_seed)
  key = jnp.asarray(key_or_seed)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.asarray(key).ravel().tolist()


def mlp_init(key_or_seed, d: int, hidden: int, classes: int) -> dict:
  """One MLP's float32 params: kernels of scale 1 / sqrt(fan in), small nonzero biases."""
  rng = np.random.default_rng(_seed_of(key_or_seed))
  layer = lambda n_in, n_out: {
      'kernel': rng.normal(scale=n_in**-0.5, size=(n_in, n_out)).astype(np.float32),
      'bias': rng.normal(scale=0.1, size=(n_out,)).astype(np.float32)
  }
  return {'hidden': layer(d, hidden), 'out': layer(hidden, classes)}


def mlp_outputs(params, x):
  """(logits, z): z = relu(x @ W_h + b_h) is the representation, logits = z @ W_o + b_o."""
  z = jax.nn.relu(x @ params['hidden']['kernel'] + params['hidden']['bias'])
  return z @ params['out']['kernel'] + params['out']['bias'], z


def _floored_norm(a):
  """max(||a||, 1e-8) over the last axis, written so that its gradient at a = 0 is 0, not NaN."""
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(a), axis=-1), NORM_FLOOR**2))


def cosine_similarity(a, b):
  """a.b / (max(||a||, 1e-8) max(||b||, 1e-8)) over the last axis."""
  return jnp.sum(a * b, axis=-1) / (_floored_norm(a) * _floored_norm(b))


def contrastive_loss(z, z_glob, z_prev, temperature):
  """l_con of each example: the cross-entropy of the global model's representation as the
  positive among {z_glob, z_prev}."""
  positive = cosine_similarity(z, z_glob) / temperature
  negative = cosine_similarity(z, z_prev) / temperature
  return jnp.logaddexp(positive, negative) - positive


def moon_objective(apply):
  """The batch objective: the default part + moon_mu * masked mean of l_con."""

  def objective(params, anchor, mu, prev, moon_mu, temperature, x, labels, mask):
    logits, z = apply(params, x)
    z_glob, z_prev = apply(anchor, x)[1], apply(prev, x)[1]  # Not differentiated: not params.
    l_con = contrastive_loss(z, z_glob, z_prev, temperature)
    return (protocol.masked_cross_entropy(logits, labels, mask) +
            0.5 * mu * protocol.squared_distance(params, anchor) +
            moon_mu * jnp.sum(l_con * mask) / jnp.sum(mask))

  return objective


def initial_state(params_stacked, num_clients: int) -> MoonState:
  """The model as given; no client has a previous model yet (prev holds zeros until it does)."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params_stacked)
  runs = jax.tree.leaves(params)[0].shape[0]
  per_client = lambda a: np.zeros((runs, num_clients, *a.shape[1:]), np.float32)
  return MoonState(params, jax.tree.map(per_client, params), np.zeros((runs, num_clients), bool))


def fedavg_delta(w64: list, results: list) -> list:
  """sum_S q_k (y_k - w) / sum_S q_k from the aggregated (client, y_k float64) pairs."""
  total = sum(client.weight for client, _ in results)
  moved = lambda i: sum(client.weight * (y_k[i] - w64[i]) for client, y_k in results)
  return [moved(i) / total for i in range(len(w64))]


def make_round(apply, batch_size: int):
  """Returns round_fn(state, cohort, settings, x, y, offsets, sizes) -> new MoonState.

  apply(params, x) -> (logits, representation); settings hold learning_rate, weight_decay, mu,
  server_learning_rate, moon_mu and moon_temperature as [R] arrays.
  """
  step = protocol.sgd_step(moon_objective(apply))

  def one_run(w: list, prev: list, has_prev, treedef, cohort, r, hp, data):
    """Run r's round on lists of leaves (prev's [N, ...]); returns the new (w, prev, has_prev)."""
    clients = list(protocol.aggregated_clients(cohort, r, *data[2:]))
    if not clients:
      return w, prev, has_prev  # Nobody aggregated: the run keeps its whole state.
    w_tree = jax.device_put(treedef.unflatten(w))
    prev, has_prev = [np.array(pl, np.float32) for pl in prev], np.array(has_prev, bool)
    results = []
    for client in clients:
      prev_k = (jax.device_put(treedef.unflatten([pl[client.id] for pl in prev]))
                if has_prev[client.id] else w_tree)
      extra = (w_tree, hp['mu'], prev_k, hp['moon_mu'], hp['moon_temperature'])
      y_k, steps = protocol.train_client(step, w_tree, client, data, batch_size, hp, extra)
      y_k = [np.asarray(a, np.float32) for a in jax.tree.leaves(y_k)]
      if steps > 0:  # A client that did no step has no new local model.
        for pl, yl in zip(prev, y_k):
          pl[client.id] = yl
        has_prev[client.id] = True
      results.append((client, protocol.as_float64(y_k)))
    w64 = protocol.as_float64(w)
    return protocol.sgd_server(hp, w64, fedavg_delta(w64, results)), prev, has_prev

  def round_fn(state: MoonState, cohort, settings, x, y, offsets, sizes) -> MoonState:
    data = tuple(np.asarray(a) for a in (x, y, offsets, sizes))
    runs, treedef = protocol.runs_of(state.params)
    prev_leaves, has_prev = jax.tree.leaves(state.prev), np.asarray(state.has_prev)
    new = [
        one_run(w, [a[r] for a in prev_leaves], has_prev[r], treedef, cohort, r,
                protocol.run_hyperparameters(settings, r), data) for r, w in enumerate(runs)
    ]
    w_runs, prev_runs, flag_runs = zip(*new)
    return MoonState(protocol.stack_runs(w_runs, treedef), protocol.stack_runs(prev_runs, treedef),
                     np.stack(flag_runs))

  return round_fn
