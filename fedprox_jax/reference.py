"""The plain reference: a Python loop over clients, epochs and batches around one jitted SGD step.

This is how per-client frameworks train; tests hold the packed, vectorized round against it, and the
benchmark times it side by side.
"""
import functools

import jax
import numpy as np
import optax

from fedprox_jax import client
from fedprox_jax import shuffle
from fedprox_jax.cohort import Cohort
from fedprox_jax.models import ApplyFn


def _mix32(x: np.ndarray) -> np.ndarray:
  x = x ^ (x >> np.uint32(16))
  x = x * np.uint32(0x85EBCA6B)
  x = x ^ (x >> np.uint32(13))
  x = x * np.uint32(0xC2B2AE35)
  return x ^ (x >> np.uint32(16))


def swap_or_not(key: np.ndarray, n: int) -> np.ndarray:
  """NumPy rendering of shuffle.permute over all of range(n): the whole epoch order."""
  x = np.arange(n, dtype=np.uint32)
  key = key.astype(np.uint32).reshape(-1, 1)  # Arrays, so uint32 products wrap silently.
  offsets = _mix32(key) % np.uint32(n)
  salts = _mix32(key ^ np.uint32(0x9E3779B9))
  for r in range(len(key)):
    partner = (offsets[r] + np.uint32(n) - x) % np.uint32(n)
    swap = (_mix32(np.maximum(x, partner) ^ salts[r]) >> np.uint32(31)) == 1
    x = np.where(swap, partner, x)
  return x.astype(np.int64)


def make_reference_train_cohort(apply_fn: ApplyFn, tx: optax.GradientTransformation, *,
                                batch_size: int):
  step = jax.jit(functools.partial(client.sgd_step, apply_fn, tx))
  epoch_key = jax.jit(shuffle.epoch_key)

  def train_client(anchor, key, epochs, rows, mu, x, y):
    n = len(rows)
    params, opt_state = anchor, tx.init(anchor)
    for epoch in range(epochs):
      order = swap_or_not(np.asarray(epoch_key(key, epoch)), n)
      for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        mask = np.zeros(batch_size, np.float32)
        mask[:len(idx)] = 1.0
        idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])
        params, opt_state, _ = step(params, opt_state, anchor, x[rows[idx]], y[rows[idx]], mask,
                                    mu)
    return params

  def train_cohort(global_params, cohort: Cohort, mu, x, y, offsets, sizes):
    """Same contract as cohort.make_train_cohort's function, with NumPy client data."""
    cohort = jax.tree.map(np.asarray, cohort)
    new_global = []
    for r in range(cohort.clients.shape[0]):
      anchor = jax.tree.map(lambda a: a[r], global_params)
      total, weighted = 0.0, None
      for k, c in enumerate(cohort.clients[r]):
        w = float(cohort.weights[r, k])
        if w == 0.0:
          continue
        rows = np.arange(offsets[c], offsets[c] + sizes[c])
        params = train_client(anchor, cohort.keys[r, k], int(cohort.epochs[r, k]), rows,
                              float(mu[r]), x, y)
        contribution = jax.tree.map(lambda p: w * np.asarray(p, np.float64), params)
        weighted = contribution if weighted is None else jax.tree.map(
            np.add, weighted, contribution)
        total += w
      new_global.append(anchor if total == 0 else jax.tree.map(
          lambda s: (s / total).astype(np.float32), weighted))
    return jax.tree.map(lambda *a: np.stack(a), *new_global)

  return train_cohort
