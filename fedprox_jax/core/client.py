"""A client's local objective and one local step.

The default objective on a mini-batch is the mean cross-entropy over its real examples plus
FedProx's proximal term mu/2 ||y - w||^2 (mu = 0: plain local SGD); an algorithm may bring its own
(algorithms/base.py), built from these parts. The step is SGD with coupled weight decay (decay * y
added to the gradient, as torch.optim.SGD does), plus the algorithm's correction if it has one
(SCAFFOLD's c - c_i). Learning rate, weight decay and mu are traced values: runs of one program may
differ in each.
"""
import jax
import jax.numpy as jnp
import optax

from fedprox_jax.algorithms.base import Batch
from fedprox_jax.algorithms.base import LocalContext


def proximal_term(params, anchor) -> jax.Array:
  """1/2 ||w - w_global||^2 over every parameter."""
  sq = jax.tree.map(lambda p, a: jnp.sum(jnp.square(p - a)), params, anchor)
  return 0.5 * sum(jax.tree.leaves(sq))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of per-example values over the real (mask = 1) examples of a padded batch."""
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropies(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example cross-entropy of integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def default_loss(model, params, batch: Batch, context: LocalContext) -> jax.Array:
  """FedProx's local objective h_k(y; w) on one mini-batch; mu = 0 gives FedAvg's."""
  ce = masked_mean(cross_entropies(model(params, batch.x).logits, batch.y), batch.mask)
  return ce + context.hp['mu'] * proximal_term(params, context.anchor)


def local_optimizer(learning_rate, weight_decay) -> optax.GradientTransformation:
  """SGD with coupled weight decay (decay * w added to the gradient), as torch.optim.SGD does."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def local_step(loss_fn,
               model,
               params,
               opt_state,
               batch: Batch,
               context: LocalContext,
               correction=None):
  """One local step on loss_fn(model, params, batch, context); returns the new parameters,
  optimizer state and the batch objective."""
  loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, batch, context))(params)
  if correction is not None:
    grads = jax.tree.map(jnp.add, grads, correction)
  hp = context.hp
  tx = local_optimizer(hp['learning_rate'], hp['weight_decay'])
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss
