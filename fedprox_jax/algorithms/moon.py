"""MOON (Li, He, Song, CVPR 2021, "Model-Contrastive Federated Learning"): local training pulls
the local model's representation of each example towards the global model's and away from the
client's previous local model's.

Local loss = cross-entropy + moon_mu * l_con (on top of the default objective, whose proximal term
is off at mu = 0), with, for each example,
l_con = -log(exp(sim(z, z_glob) / T) / (exp(sim(z, z_glob) / T) + exp(sim(z, z_prev) / T))),
z the local model's representation, z_glob the global model's, z_prev the client's previous local
model's (before its first round: the global model's), sim the cosine similarity and
T = moon_temperature. The previous local models are client state. The server takes FedAvg's
weighted mean. The representation is what the model declares (tasks/models.py): the CNN's last
hidden layer, the LSTM's last hidden state; models without one are refused.
"""
import jax
import jax.numpy as jnp

from fedprox_jax.algorithms import base
from fedprox_jax.core import client

NORM_FLOOR = 1e-8  # Of each vector in the cosine similarity, as torch's cosine_similarity.


def init_client_state(params):
  """The previous local model, and whether the client has one yet (0: use the global model)."""
  return {'params': jax.tree.map(jnp.zeros_like, params), 'seen': jnp.zeros((), jnp.float32)}


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of [batch, features] arrays, each norm floored at NORM_FLOOR.

  The floor applies to the squared norm under the root: max(||v||, floor) with a gradient of 0
  rather than NaN at v = 0 (a ReLU layer can give an all-zero representation)."""
  norm = lambda v: jnp.sqrt(jnp.maximum(jnp.sum(v * v, -1), NORM_FLOOR**2))
  return jnp.sum(a * b, -1) / (norm(a) * norm(b))


def contrastive(z, z_glob, z_prev, temperature) -> jax.Array:
  """Per-example l_con: the cross-entropy of picking the global model's representation."""
  positive = cosine(z, z_glob) / temperature
  negative = cosine(z, z_prev) / temperature
  return jnp.logaddexp(positive, negative) - positive


def local_loss(model, params, batch: base.Batch, context: base.LocalContext):
  hp = context.hp
  outputs = model(params, batch.x)
  ce = client.masked_mean(client.cross_entropies(outputs.logits, batch.y), batch.mask)
  prox = hp['mu'] * client.proximal_term(params, context.anchor)
  seen = context.client_state['seen'] > 0
  previous = jax.tree.map(lambda p, a: jnp.where(seen, p, a), context.client_state['params'],
                          context.anchor)
  # Neither depends on params: no gradient flows through them.
  z_glob = model(context.anchor, batch.x).representation
  z_prev = model(previous, batch.x).representation
  l_con = contrastive(outputs.representation, z_glob, z_prev, hp['moon_temperature'])
  return ce + prox + hp['moon_mu'] * client.masked_mean(l_con, batch.mask)


def upload(result: base.ClientResult, state, client_state, hp):
  del state, client_state, hp
  return {'delta': result.delta}, {'params': result.params, 'seen': jnp.ones((), jnp.float32)}


ALGORITHM = base.Algorithm(
    name='moon',
    init_state=base.no_state,
    upload=upload,
    server_delta=base.mean_delta,
    init_client_state=init_client_state,
    local_loss=local_loss,
    needs_representation=True,
    hyperparameters=(
        base.Hyperparameter('moon_mu', 1.0, lambda v: v >= 0, 'must be >= 0',
                            "MOON's weight of the model-contrastive loss (0: FedAvg)"),
        base.Hyperparameter('moon_temperature', 0.5, lambda v: v > 0, 'must be > 0',
                            "MOON's temperature T of the contrastive loss"),
    ))
