"""A plain, sequential reference for federated rounds: Python loops around one jitted local step.

Tests hold the vectorized rounds against it to 1e-5, and the benchmark times it as the
one-client-at-a-time baseline. It is written from the equations alone (FedAvg, FedProx, FedNova,
SCAFFOLD option II, and the server optimizers of Reddi et al. 2021, Algorithm 2, without bias
correction) and shares only the shuffle protocol with the packed code, so their agreement means
something. The local step runs in float32 on the device; the aggregation and the server arithmetic
run in float64 NumPy, and parameters are stored back as float32.
"""
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SWAP_OR_NOT_ROUNDS = 48
ALGORITHMS = ('fedavg', 'fedprox', 'fednova', 'scaffold')
SERVER_OPTIMIZERS = ('sgd', 'momentum', 'adam', 'yogi', 'adagrad')
_COHORT_FIELDS = ('clients', 'epochs', 'weights', 'keys')


class ReferenceState(NamedTuple):
  """Server state of R runs. params is a pytree; the rest are lists of leaves in its flat order."""
  params: Any  # pytree of float32 [R, ...]
  m: Any  # list of float64 [R, ...]: server first moment (momentum)
  v: Any  # list of float64 [R, ...]: server second moment, starts at eps^2
  c: Any  # list of float64 [R, ...]: SCAFFOLD server control variate
  client_c: Any  # list of float64 [R, N, ...]: SCAFFOLD control variate of every client


def _mix32(x: np.ndarray) -> np.ndarray:
  x = x ^ (x >> np.uint32(16))
  x = x * np.uint32(0x85EBCA6B)
  x = x ^ (x >> np.uint32(13))
  x = x * np.uint32(0xC2B2AE35)
  return x ^ (x >> np.uint32(16))


def swap_or_not(key: np.ndarray, n: int) -> np.ndarray:
  """NumPy rendering of the keyed swap-or-not shuffle over all of range(n): the epoch order."""
  x = np.arange(n, dtype=np.uint32)
  key = key.astype(np.uint32).reshape(-1, 1)  # Arrays, so uint32 products wrap silently.
  offsets = _mix32(key) % np.uint32(n)
  salts = _mix32(key ^ np.uint32(0x9E3779B9))
  for r in range(len(key)):
    partner = (offsets[r] + np.uint32(n) - x) % np.uint32(n)
    swap = (_mix32(np.maximum(x, partner) ^ salts[r]) >> np.uint32(31)) == 1
    x = np.where(swap, partner, x)
  return x.astype(np.int64)


@jax.jit
def epoch_key(client_key: jax.Array, epoch: jax.Array) -> jax.Array:
  """The shuffle key of one client's epoch: uint32 [SWAP_OR_NOT_ROUNDS]."""
  return jax.random.bits(jax.random.fold_in(client_key, epoch), (SWAP_OR_NOT_ROUNDS,), jnp.uint32)


def make_local_step(apply_fn):
  """The one jitted per-batch step: y <- y - lr * (grad h(y) + wd * y [+ c - c_i])."""

  def objective(params, anchor, x, y, mask, mu):
    logits = apply_fn(params, x)
    ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    sq = sum(
        jnp.sum(jnp.square(p - a))
        for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(anchor)))
    return jnp.sum(ce * mask) / jnp.sum(mask) + 0.5 * mu * sq

  @jax.jit
  def step(params, anchor, cdiff, x, y, mask, lr, wd, mu):
    g = jax.grad(objective)(params, anchor, x, y, mask, mu)
    g = jax.tree.map(lambda gi, p: gi + wd * p, g, params)
    if cdiff is not None:  # SCAFFOLD's drift correction; None keeps FedAvg's program lean.
      g = jax.tree.map(jnp.add, g, cdiff)
    return jax.tree.map(lambda p, gi: p - lr * gi, params, g)

  return step


def _train_client(step, treedef, w, key, epochs, rows, data, hp, batch_size, cdiff):
  """One client's local SGD from w (leaves); returns its final leaves (float32) and tau_i."""
  x, y = data[:2]
  n = len(rows)
  anchor = jax.device_put(treedef.unflatten(w))  # Once per client, not once per step.
  params = anchor
  cdiff = None if cdiff is None else jax.device_put(treedef.unflatten(cdiff))
  for e in range(epochs):
    order = swap_or_not(np.asarray(epoch_key(key, e)), n)
    for start in range(0, n, batch_size):
      idx = order[start:start + batch_size]
      mask = np.zeros(batch_size, np.float32)
      mask[:len(idx)] = 1.0
      idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])  # Pad: repeat last.
      params = step(params, anchor, cdiff, x[rows[idx]], y[rows[idx]], mask, hp['learning_rate'],
                    hp['weight_decay'], hp['mu'])
  return [np.asarray(a) for a in jax.tree.leaves(params)], epochs * -(-n // batch_size)


def _train_run(step, treedef, w, cohort, r, hp, data, batch_size, cdiff_of):
  """Trains run r's aggregated clients (q > 0) one by one: a list of (client, q, tau, y_i)."""
  offsets, sizes = data[2:]
  results = []
  for k in range(cohort['clients'].shape[1]):
    q = float(cohort['weights'][r, k])
    if q <= 0.0:
      continue  # Not aggregated, so its work (if any) could not change anything.
    cid = int(cohort['clients'][r, k])
    rows = np.arange(offsets[cid], offsets[cid] + sizes[cid])
    y_i, tau = _train_client(step, treedef, w, cohort['keys'][r, k], int(cohort['epochs'][r, k]),
                             rows, data, hp, batch_size, cdiff_of(cid))
    results.append((cid, q, tau, y_i))
  return results


def _weighted_sum(coeffs, trees):
  """sum_i coeffs[i] * trees[i] over lists of float64 leaves."""
  return [sum(c * t[i] for c, t in zip(coeffs, trees)) for i in range(len(trees[0]))]


def _pseudo_gradient(algorithm, w, results, hp):
  """Delta in float64: the weighted mean update, or FedNova's normalized one."""
  q = np.array([res[1] for res in results])
  p = q / q.sum()
  deltas = [[yl.astype(np.float64) - wl.astype(np.float64)
             for yl, wl in zip(res[3], w)]
            for res in results]  # A tau = 0 client returns w itself, so its delta is exactly 0.
  if algorithm != 'fednova':
    return _weighted_sum(p, deltas)
  alpha = hp['learning_rate'] * (hp['mu'] + hp['weight_decay'])
  taus = np.array([res[2] for res in results], np.float64)
  a = taus if alpha == 0.0 else (1.0 - (1.0 - alpha)**taus) / alpha
  inv = np.where(taus > 0, 1.0 / np.where(taus > 0, a, 1.0), 0.0)
  tau_eff = float(np.sum(p * a))
  return [tau_eff * d for d in _weighted_sum(p * inv, deltas)]


def _server_leaf(opt, hp, w, m, v, delta):
  """Reddi et al.'s Algorithm 2 on one leaf; returns (w float32, m, v)."""
  eta = hp['server_learning_rate']
  if opt == 'sgd':
    move = delta
  elif opt == 'momentum':
    m = hp['server_momentum'] * m + delta
    move = m
  else:  # Read here, so plain sgd and momentum need no b1, b2 or eps in their settings.
    b1, b2, eps = hp['b1'], hp['b2'], hp['eps']
    m = b1 * m + (1.0 - b1) * delta
    d2 = np.square(delta)
    if opt == 'adam':
      v = b2 * v + (1.0 - b2) * d2
    elif opt == 'yogi':
      v = v - (1.0 - b2) * d2 * np.sign(v - d2)
    else:  # adagrad
      v = v + d2
    move = m / (np.sqrt(v) + eps)
  return (w.astype(np.float64) + eta * move).astype(np.float32), m, v


def _scaffold_update(c, client_c, w, results, hp, total_q):
  """Option II control variates; every formula sees the round-start c. Returns (c, client_c)."""
  new_c = [a.copy() for a in c]
  client_c = [a.copy() for a in client_c]
  for cid, q, tau, y_i in results:
    if tau == 0:
      continue  # No steps: the client has no new estimate of its gradient.
    for leaf, (cl, wl, yl) in enumerate(zip(c, w, y_i)):
      old = client_c[leaf][cid]
      new = old - cl + (wl.astype(np.float64) - yl.astype(np.float64)) / (tau * hp['learning_rate'])
      new_c[leaf] += (q / total_q) * (new - old)
      client_c[leaf][cid] = new
  return new_c, client_c


def _take_run(state, leaves, r):
  return ReferenceState([a[r] for a in leaves], *([a[r] for a in f] for f in state[1:]))


def initial_state(params_stacked, num_clients: int, eps) -> ReferenceState:
  """Fresh server state: m = 0, v = eps^2 (per run), c = 0, every client's c_i = 0."""
  leaves = [np.asarray(a, np.float64) for a in jax.tree.leaves(params_stacked)]
  eps2 = np.square(np.asarray(eps, np.float64))
  return ReferenceState(
      params=jax.tree.map(lambda a: np.asarray(a, np.float32), params_stacked),
      m=[np.zeros_like(a) for a in leaves],
      v=[np.ones_like(a) * eps2.reshape(-1, *[1] * (a.ndim - 1)) for a in leaves],
      c=[np.zeros_like(a) for a in leaves],
      client_c=[np.zeros((a.shape[0], num_clients, *a.shape[1:])) for a in leaves])


def make_reference_round(apply_fn, *, algorithm: str, server_optimizer: str, batch_size: int):
  """Returns round_fn(state, cohort, settings, x, y, offsets, sizes) -> new ReferenceState.

  settings maps learning_rate, weight_decay, mu, server_learning_rate, server_momentum, b1, b2,
  eps and weighting (0: examples, 1: batches, 2: uniform) to [R] arrays; cohort has clients,
  epochs, weights, keys of [R, K].
  """
  assert algorithm in ALGORITHMS and server_optimizer in SERVER_OPTIMIZERS
  step = make_local_step(apply_fn)
  scaffold = algorithm == 'scaffold'

  def one_run(run, cohort, r, hp, treedef, data):
    sizes = np.asarray(data[3])
    cdiff_of = lambda cid: ([(cl - cc[cid]).astype(np.float32)
                             for cl, cc in zip(run.c, run.client_c)] if scaffold else None)
    results = _train_run(step, treedef, run.params, cohort, r, hp, data, batch_size, cdiff_of)
    if not results:
      return run  # Nobody aggregated: w, m, v, c and every c_i stay as they are.
    delta = _pseudo_gradient(algorithm, run.params, results, hp)
    w, m, v = zip(*(
        _server_leaf(server_optimizer, hp, *leaf) for leaf in zip(run.params, run.m, run.v, delta)))
    c, client_c = run.c, run.client_c
    if scaffold:
      q_all = {0: sizes, 1: -(-sizes // batch_size), 2: np.ones_like(sizes)}[int(hp['weighting'])]
      c, client_c = _scaffold_update(c, client_c, run.params, results, hp, float(q_all.sum()))
    return ReferenceState(list(w), list(m), list(v), c, client_c)

  def round_fn(state, cohort, settings, x, y, offsets, sizes):
    cohort = {f: np.asarray(getattr(cohort, f)) for f in _COHORT_FIELDS}
    leaves, treedef = jax.tree.flatten(state.params)
    data = (np.asarray(x), np.asarray(y), np.asarray(offsets), np.asarray(sizes))
    runs = []
    for r in range(cohort['clients'].shape[0]):
      hp = {k: np.asarray(v)[r].item() for k, v in settings.items()}
      runs.append(one_run(_take_run(state, leaves, r), cohort, r, hp, treedef, data))
    stack = lambda field: [np.stack(a) for a in zip(*(getattr(run, field) for run in runs))]
    return ReferenceState(treedef.unflatten(stack('params')), *map(stack,
                                                                   ReferenceState._fields[1:]))

  return round_fn


def make_reference_train_cohort(apply_fn, *, learning_rate: float, weight_decay: float,
                                batch_size: int):
  """Local training plus FedAvg's weighted mean only: the benchmark's sequential baseline.

  The old entry point with the local optimizer given as numbers rather than as an optax chain
  add_decayed_weights(weight_decay), sgd(learning_rate). Returns
  train_cohort(global_params [R], cohort, mu [R], x, y, offsets, sizes) -> new stacked params:
  the q-weighted mean of the aggregated clients' final params, a run's own params if none.
  """
  step = make_local_step(apply_fn)

  def train_cohort(global_params, cohort, mu, x, y, offsets, sizes):
    cohort = {f: np.asarray(getattr(cohort, f)) for f in _COHORT_FIELDS}
    leaves, treedef = jax.tree.flatten(global_params)
    leaves = [np.asarray(a) for a in leaves]
    data = (np.asarray(x), np.asarray(y), np.asarray(offsets), np.asarray(sizes))
    runs = []
    for r in range(cohort['clients'].shape[0]):
      w = [a[r] for a in leaves]
      hp = dict(learning_rate=learning_rate, weight_decay=weight_decay, mu=float(mu[r]))
      results = _train_run(step, treedef, w, cohort, r, hp, data, batch_size, lambda _: None)
      if not results:
        runs.append(w)
        continue
      q = np.array([res[1] for res in results])
      mean = _weighted_sum(q / q.sum(), [[a.astype(np.float64) for a in res[3]] for res in results])
      runs.append([a.astype(np.float32) for a in mean])
    return treedef.unflatten([np.stack(a) for a in zip(*runs)])

  return train_cohort
