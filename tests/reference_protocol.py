"""The local-training protocol that the plain references of the algorithms engine/reference.py
does not know share (each tests/reference_NAME.py).

Like engine/reference.py, these references are Python loops over runs, clients, epochs and batches
around one jitted local step, written from the papers' equations; they share only the shuffle
(swap_or_not, epoch_key) and the server optimizer (_server_leaf) with it, and nothing with the
packed code, so that agreement between the two means something. Local steps run in float32 on the
device; the server's arithmetic runs in float64 NumPy, and parameters are stored back as float32.

Local training of a client from the global model w: for each epoch, the order swap_or_not gives,
cut into batches of batch_size rows (the last one padded by repeating its last row, with mask 0 on
the padding), one step per batch: y <- y - lr * (grad of the batch objective + wd * y). Every
batch objective holds the masked mean cross-entropy plus mu/2 ||y - w||^2; the algorithms add
their own terms. Only the clients of weight q > 0 (the aggregated set S) are trained; a run whose
S is empty keeps its whole state.
"""
from collections.abc import Iterator
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.engine import reference as ref


class Client(NamedTuple):
  """One aggregated client of a run's cohort."""
  id: int
  weight: float  # q_k > 0
  epochs: int
  key: np.ndarray
  rows: np.ndarray  # its training rows in the data arrays


def aggregated_clients(cohort, r: int, offsets, sizes) -> Iterator[Client]:
  """Run r's clients of weight q > 0, in cohort order: the only ones trained and aggregated."""
  for k in range(cohort.clients.shape[1]):
    weight = float(cohort.weights[r, k])
    if weight > 0.0:
      cid = int(cohort.clients[r, k])
      rows = np.arange(offsets[cid], offsets[cid] + sizes[cid])
      yield Client(cid, weight, int(cohort.epochs[r, k]), np.asarray(cohort.keys[r, k]), rows)


def run_hyperparameters(settings, r: int) -> dict:
  """Run r's settings as Python scalars."""
  return {name: np.asarray(values)[r].item() for name, values in settings.items()}


def client_batches(client: Client, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """The rows and mask of each local step, in order: a fresh shuffle per epoch, padded batches."""
  n = len(client.rows)
  for epoch in range(client.epochs):
    order = ref.swap_or_not(np.asarray(ref.epoch_key(client.key, epoch)), n)
    for start in range(0, n, batch_size):
      positions = order[start:start + batch_size]
      mask = np.zeros(batch_size, np.float32)
      mask[:len(positions)] = 1.0
      padding = np.full(batch_size - len(positions), positions[-1])  # Repeat the last row.
      yield client.rows[np.concatenate([positions, padding])], mask


def masked_cross_entropy(logits, labels, mask):
  """Mean cross-entropy over the real examples of a padded batch."""
  ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  return jnp.sum(ce * mask) / jnp.sum(mask)


def squared_distance(a, b):
  """||a - b||^2 summed over every leaf of two pytrees."""
  return sum(jnp.sum(jnp.square(u - v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def sgd_step(objective):
  """The jitted local step on objective(y, *args): y <- y - lr * (grad + wd * y)."""

  @jax.jit
  def step(params, args, lr, wd):
    grad = jax.grad(objective)(params, *args)
    grad = jax.tree.map(lambda g, p: g + wd * p, grad, params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grad)

  return step


def train_client(step, start, client: Client, data, batch_size: int, hp, extra_args=()):
  """Local SGD from start (a device pytree), one step per batch; returns (y_k, its step count).

  A step's objective arguments are extra_args followed by the batch's features, labels and mask.
  """
  x, y = data[:2]
  params, steps = start, 0
  for rows, mask in client_batches(client, batch_size):
    params = step(params, (*extra_args, x[rows], y[rows], mask), hp['learning_rate'],
                  hp['weight_decay'])
    steps += 1
  return params, steps


def as_float64(tree) -> list:
  """A pytree's leaves as float64 NumPy arrays."""
  return [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(tree)]


def sgd_server(hp, w: list, delta: list) -> list:
  """The SGD server optimizer on float64 leaves: w + server_learning_rate * Delta_t, float32."""
  return [ref._server_leaf('sgd', hp, wl, None, None, dl)[0] for wl, dl in zip(w, delta)]


def runs_of(params_stacked) -> tuple[list, Any]:
  """Each run's params as a list of float32 leaves, and the treedef."""
  leaves, treedef = jax.tree.flatten(params_stacked)
  leaves = [np.asarray(a, np.float32) for a in leaves]
  return [[a[r] for a in leaves] for r in range(leaves[0].shape[0])], treedef


def stack_runs(runs: list, treedef) -> Any:
  """The inverse of runs_of: a pytree of [R, ...] from each run's list of leaves."""
  return treedef.unflatten([np.stack(leaf) for leaf in zip(*runs)])


def default_objective(apply):
  """The batch objective every algorithm starts from: masked mean CE + mu/2 ||y - w||^2."""

  def objective(params, anchor, mu, x, labels, mask):
    return (masked_cross_entropy(apply(params, x), labels, mask) +
            0.5 * mu * squared_distance(params, anchor))

  return objective
