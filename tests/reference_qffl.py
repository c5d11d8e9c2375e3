"""A plain, sequential reference for q-FFL (Li, Sanjabi, Beirami and Smith, ICLR 2020, Algorithm 2,
q-FedAvg), on the local-training protocol of tests/reference_protocol.py.

For each k in S, F_k is the mean cross-entropy of all its training examples at w; after local
training, dw_k = L (w - y_k), Delta_k = F_k^q dw_k and h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q,
with L = 1 / lr unless qffl_lipschitz > 0 sets it. The server moves w by the SGD server optimizer
on Delta_t = -(sum_S q_k Delta_k) / (sum_S q_k h_k). With q = 0 this is FedAvg's weighted mean.
"""
from typing import Any
from typing import NamedTuple

import jax
import numpy as np

from tests import reference_protocol as protocol


class QfflState(NamedTuple):
  params: Any  # pytree of float32 [R, ...]


def initial_state(params_stacked, num_clients: int) -> QfflState:
  """q-FFL keeps no state beyond the model (num_clients: the common signature)."""
  del num_clients
  return QfflState(jax.tree.map(lambda a: np.asarray(a, np.float32), params_stacked))


def lipschitz(hp) -> float:
  """L: 1 / learning_rate, as the paper's q-FedAvg, unless qffl_lipschitz > 0 sets it."""
  return 1.0 / hp['learning_rate'] if hp['qffl_lipschitz'] == 0 else hp['qffl_lipschitz']


def full_loss(apply_jit, w_tree, data, client: protocol.Client) -> float:
  """F_k: the mean cross-entropy of all the client's training examples at w, in float64."""
  x, y = data[:2]
  logits = np.asarray(apply_jit(w_tree, x[client.rows]), np.float64)
  top = logits.max(axis=-1)
  lse = top + np.log(np.sum(np.exp(logits - top[:, None]), axis=-1))
  return float(np.mean(lse - logits[np.arange(len(logits)), y[client.rows]]))


def client_terms(loss: float, dw: list, q: float, lip: float) -> tuple[list, float]:
  """Delta_k = F^q dw and h_k = q F^(q-1) ||dw||^2 + L F^q (its first term 0 when q == 0), with
  F = loss + 1e-10 as the authors' code (litian96/fair_flearn) takes it."""
  loss = loss + 1e-10
  scale = loss**q
  curvature = q * loss**(q - 1.0) * sum(np.sum(d * d) for d in dw) if q != 0.0 else 0.0
  return [scale * d for d in dw], curvature + lip * scale


def make_round(apply, batch_size: int):
  """Returns round_fn(state, cohort, settings, x, y, offsets, sizes) -> new QfflState.

  apply(params, x) -> logits; settings hold learning_rate, weight_decay, mu, server_learning_rate,
  q and qffl_lipschitz as [R] arrays.
  """
  step = protocol.sgd_step(protocol.default_objective(apply))
  apply_jit = jax.jit(apply)

  def one_run(w: list, treedef, cohort, r, hp, data):
    clients = list(protocol.aggregated_clients(cohort, r, *data[2:]))
    if not clients:
      return w  # Nobody aggregated: the run keeps its model.
    w_tree = jax.device_put(treedef.unflatten(w))
    w64, lip = protocol.as_float64(w), lipschitz(hp)
    numerator, denominator = [np.zeros_like(a) for a in w64], 0.0
    for client in clients:
      loss = full_loss(apply_jit, w_tree, data, client)
      y_k, _ = protocol.train_client(step, w_tree, client, data, batch_size, hp, (w_tree, hp['mu']))
      dw = [lip * (wl - yl) for wl, yl in zip(w64, protocol.as_float64(y_k))]
      delta_k, h_k = client_terms(loss, dw, hp['q'], lip)
      numerator = [acc + client.weight * d for acc, d in zip(numerator, delta_k)]
      denominator += client.weight * h_k
    return protocol.sgd_server(hp, w64, [-a / denominator for a in numerator])

  def round_fn(state: QfflState, cohort, settings, x, y, offsets, sizes) -> QfflState:
    data = tuple(np.asarray(a) for a in (x, y, offsets, sizes))
    runs, treedef = protocol.runs_of(state.params)
    new = [
        one_run(w, treedef, cohort, r, protocol.run_hyperparameters(settings, r), data)
        for r, w in enumerate(runs)
    ]
    return QfflState(protocol.stack_runs(new, treedef))

  return round_fn
