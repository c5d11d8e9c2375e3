"""FedDyn (Acar et al., ICLR 2021, "Federated Learning Based on Dynamic Regularization",
Algorithm 1): each client's objective is tilted by a linear term it keeps, so that the clients'
local optima agree with the global one.

Client k keeps g_k (starts at 0) and minimises L_k(y) - <g_k, y> + alpha/2 ||y - w||^2 (on top of
the default objective, whose proximal term is off at mu = 0); after its steps,
g_k <- g_k - alpha (y_k - w). The server keeps h (starts at 0):
h <- h - alpha (1/m) sum_{k in P_t} (y_k - w) over the m clients of the population, and
w <- mean_{k in P_t} y_k - h / alpha. The means are weighted by the client weights of
algorithm.weighting, and 1/m is q_k over the population's sum of q_j (weighting = 'uniform' is the
paper's).
"""
import jax
import jax.numpy as jnp

from fedprox_jax.algorithms import base
from fedprox_jax.core import client


def init_state(params, hp):
  del hp
  return {'h': jax.tree.map(jnp.zeros_like, params)}


def init_client_state(params):
  return jax.tree.map(jnp.zeros_like, params)  # g_k


def local_loss(model, params, batch: base.Batch, context: base.LocalContext):
  linear = sum(
      jnp.sum(g * p)
      for g, p in zip(jax.tree.leaves(context.client_state), jax.tree.leaves(params)))
  dynamic = context.hp['alpha'] * client.proximal_term(params, context.anchor)
  return client.default_loss(model, params, batch, context) - linear + dynamic


def upload(result: base.ClientResult, state, client_state, hp):
  del state
  g = jax.tree.map(lambda gk, d: gk - hp['alpha'] * d, client_state, result.delta)
  return {'delta': result.delta}, g


def server_delta(totals: base.Totals, state, hp):
  alpha = hp['alpha']
  moved = base.mean(totals.sums['delta'], totals.population_weight)
  h = jax.tree.map(lambda h, m: h - alpha * m, state['h'], moved)
  mean_delta = base.mean(totals.sums['delta'], totals.weight)
  return jax.tree.map(lambda d, h: d - h / alpha, mean_delta, h), {'h': h}


ALGORITHM = base.Algorithm(
    name='feddyn',
    init_state=init_state,
    upload=upload,
    server_delta=server_delta,
    init_client_state=init_client_state,
    local_loss=local_loss,
    paper_server_step=True,
    hyperparameters=(base.Hyperparameter(
        'alpha', 0.01, lambda v: v > 0, 'must be > 0',
        "FedDyn's regulariser: the weight of each client's dynamic proximal and linear terms"),))
