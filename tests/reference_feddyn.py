"""A plain, sequential reference for FedDyn (Acar et al., ICLR 2021, Algorithm 1), written from the
paper's equations on the local-training protocol of tests/reference_protocol.py.

Each client k keeps g_k (the paper's estimate of grad L_k at the client's last model, 0 at first)
and the server keeps h (0 at first). A local step's batch objective is the default one (masked
mean cross-entropy + mu/2 ||y - w||^2) minus <g_k, y> plus alpha/2 ||y - w||^2; after training,
g_k <- g_k - alpha (y_k - w). The server, with Q = sum_S q_k and P the population's sum_j q_j:
h <- h - alpha sum_S q_k (y_k - w) / P, then w moves by the SGD server optimizer on
Delta_t = sum_S q_k y_k / Q - h / alpha - w (with the new h). With uniform weights, P = N and
Q = |S|, this is the paper's. g and h are kept in float64.
"""
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tests import reference_protocol as protocol


class FedDynState(NamedTuple):
  params: Any  # pytree of float32 [R, ...]
  h: Any  # pytree of float64 [R, ...]: the server's state
  g: Any  # pytree of float64 [R, N, ...]: every client's state


def initial_state(params_stacked, num_clients: int) -> FedDynState:
  """The model as given; h = 0 and every client's g_k = 0."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params_stacked)
  return FedDynState(params=params,
                     h=jax.tree.map(lambda a: np.zeros(a.shape), params),
                     g=jax.tree.map(lambda a: np.zeros((a.shape[0], num_clients, *a.shape[1:])),
                                    params))


def population_weight(weighting: int, sizes: np.ndarray, batch_size: int) -> float:
  """sum_j q_j over all N clients: examples (weighting 0), ceil(n / batch_size) (1), 1 each (2)."""
  per_client = (sizes, -(-sizes // batch_size), np.ones_like(sizes))[int(weighting)]
  return float(np.sum(per_client, dtype=np.float64))


def feddyn_objective(apply):
  """The batch objective: the default part - <g_k, y> + alpha/2 ||y - w||^2."""
  default = protocol.default_objective(apply)

  def objective(params, anchor, mu, g_k, alpha, x, labels, mask):
    linear = sum(jnp.sum(g * p) for g, p in zip(jax.tree.leaves(g_k), jax.tree.leaves(params)))
    return (default(params, anchor, mu, x, labels, mask) - linear +
            0.5 * alpha * protocol.squared_distance(params, anchor))

  return objective


def server_update(hp, w64: list, h: list, results: list, population: float) -> tuple[list, list]:
  """The new (w float32, h) from the aggregated (client, y_k float64) pairs."""
  alpha, total = hp['alpha'], sum(client.weight for client, _ in results)
  moved = [
      sum(client.weight * (y_k[i] - wl) for client, y_k in results) for i, wl in enumerate(w64)
  ]
  h = [hl - alpha * m / population for hl, m in zip(h, moved)]
  mean = [sum(client.weight * y_k[i] for client, y_k in results) / total for i in range(len(w64))]
  delta = [ml - hl / alpha - wl for ml, hl, wl in zip(mean, h, w64)]
  return protocol.sgd_server(hp, w64, delta), h


def make_round(apply, batch_size: int):
  """Returns round_fn(state, cohort, settings, x, y, offsets, sizes) -> new FedDynState.

  apply(params, x) -> logits; settings hold learning_rate, weight_decay, mu, server_learning_rate,
  weighting (0: examples, 1: batches, 2: uniform) and alpha as [R] arrays.
  """
  step = protocol.sgd_step(feddyn_objective(apply))

  def one_run(w: list, h: list, g: list, treedef, cohort, r, hp, data):
    """Run r's round on lists of leaves (g's [N, ...]); returns the new (w, h, g)."""
    clients = list(protocol.aggregated_clients(cohort, r, *data[2:]))
    if not clients:
      return w, h, g  # Nobody aggregated: the run keeps its whole state.
    w_tree, w64 = jax.device_put(treedef.unflatten(w)), protocol.as_float64(w)
    g = [np.array(gl, np.float64) for gl in g]
    results = []
    for client in clients:
      g_k = jax.device_put(treedef.unflatten([gl[client.id].astype(np.float32) for gl in g]))
      extra = (w_tree, hp['mu'], g_k, hp['alpha'])
      y_k, _ = protocol.train_client(step, w_tree, client, data, batch_size, hp, extra)
      y_k = protocol.as_float64(y_k)
      for gl, yl, wl in zip(g, y_k, w64):
        gl[client.id] -= hp['alpha'] * (yl - wl)
      results.append((client, y_k))
    population = population_weight(hp['weighting'], data[3], batch_size)
    return (*server_update(hp, w64, h, results, population), g)

  def round_fn(state: FedDynState, cohort, settings, x, y, offsets, sizes) -> FedDynState:
    data = tuple(np.asarray(a) for a in (x, y, offsets, sizes))
    runs, treedef = protocol.runs_of(state.params)
    h_leaves, g_leaves = jax.tree.leaves(state.h), jax.tree.leaves(state.g)
    new = [
        one_run(w, [a[r] for a in h_leaves], [a[r] for a in g_leaves], treedef, cohort, r,
                protocol.run_hyperparameters(settings, r), data) for r, w in enumerate(runs)
    ]
    w_runs, h_runs, g_runs = zip(*new)
    return FedDynState(*(protocol.stack_runs(runs, treedef) for runs in (w_runs, h_runs, g_runs)))

  return round_fn
