"""SCAFFOLD (Karimireddy et al., ICML 2020), option II: control variates against client drift.

c and every client's c_i start at 0. A local step follows g(y) - c_i + c. After its tau_i steps a
client sets c_i+ = c_i - c + (w - y_i) / (tau_i lr) and uploads dy_i = y_i - w and
dc_i = c_i+ - c_i. With client weights q_i (training examples or batches, algorithm.weighting):
w <- w + lr_g sum_{i in S} (q_i / sum_{j in S} q_j) dy_i (the server optimizer, lr_g its learning
rate) and c <- c + sum_{i in S} (q_i / sum_{j=1..N} q_j) dc_i, so c stays the q-weighted mean of
all the c_i (with uniform q, the paper's (1/N) sum dc_i). Clients that do no step keep c_i.
Where the aggregation stages change what is sent (compression, DP's clip), a client moves c_i by
the dc it sent, not by the one it computed, so that c stays the mean of the c_i.
"""
import jax
import jax.numpy as jnp

from fedprox_jax.algorithms import base


def init_state(params, hp):
  del hp
  return {'c': jax.tree.map(jnp.zeros_like, params)}


def init_client_state(params):
  return jax.tree.map(jnp.zeros_like, params)


def correction(state, client_state, hp):
  del hp
  return jax.tree.map(lambda c, ci: c - ci, state['c'], client_state)


def upload(result: base.ClientResult, state, client_state, hp):
  del hp
  worked = result.steps > 0
  scale = 1.0 / (jnp.maximum(result.steps, 1).astype(jnp.float32) * result.learning_rate)
  new_ci = jax.tree.map(lambda ci, c, d: jnp.where(worked, ci - c - d * scale, ci), client_state,
                        state['c'], result.delta)
  dc = jax.tree.map(jnp.subtract, new_ci, client_state)
  return {'delta': result.delta, 'dc': dc}, new_ci


def after_send(sent, client_state, new_client_state, hp):
  """c_i + the dc sent; c_i+ itself where the dc sent is the one computed (no rounding)."""
  del hp
  return jax.tree.map(lambda ci, new, dc: jnp.where(dc == new - ci, new, ci + dc), client_state,
                      new_client_state, sent['dc'])


def server_delta(totals: base.Totals, state, hp):
  del hp
  c = jax.tree.map(jnp.add, state['c'], base.mean(totals.sums['dc'], totals.population_weight))
  return base.mean(totals.sums['delta'], totals.weight), {'c': c}


ALGORITHM = base.Algorithm(name='scaffold',
                           init_state=init_state,
                           upload=upload,
                           server_delta=server_delta,
                           init_client_state=init_client_state,
                           correction=correction,
                           downloads=('c',),
                           after_send=after_send)
