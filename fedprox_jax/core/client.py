"""A client's local objective and one local step, the same for every algorithm.

The objective on a mini-batch is the mean cross-entropy plus FedProx's proximal term
mu/2 ||y - w||^2 (mu = 0: plain local SGD); the step is SGD with coupled weight decay (decay * y
added to the gradient, as torch.optim.SGD does), plus the algorithm's correction if it has one
(SCAFFOLD's c - c_i). Learning rate, weight decay and mu are traced values: runs of one program may
differ in each.
"""
import jax
import jax.numpy as jnp
import optax

from fedprox_jax.tasks.models import ApplyFn


def proximal_term(params, anchor) -> jax.Array:
  """1/2 ||w - w_global||^2 over every parameter."""
  sq = jax.tree.map(lambda p, a: jnp.sum(jnp.square(p - a)), params, anchor)
  return 0.5 * sum(jax.tree.leaves(sq))


def masked_cross_entropy(apply_fn: ApplyFn, params, x: jax.Array, y: jax.Array,
                         mask: jax.Array) -> jax.Array:
  """Mean cross-entropy over the real (mask = 1) examples of a padded batch."""
  ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y)
  return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def local_objective(apply_fn: ApplyFn, params, anchor, x, y, mask, mu) -> jax.Array:
  """FedProx's local objective h_k(w; w_global) on one mini-batch; mu = 0 gives FedAvg's."""
  return masked_cross_entropy(apply_fn, params, x, y, mask) + mu * proximal_term(params, anchor)


def local_optimizer(learning_rate, weight_decay) -> optax.GradientTransformation:
  """SGD with coupled weight decay (decay * w added to the gradient), as torch.optim.SGD does."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def local_step(apply_fn: ApplyFn, params, opt_state, anchor, x, y, mask, hp: dict, correction=None):
  """One local step; returns the new parameters, optimizer state and the batch objective."""
  loss, grads = jax.value_and_grad(
      lambda p: local_objective(apply_fn, p, anchor, x, y, mask, hp['mu']))(params)
  if correction is not None:
    grads = jax.tree.map(jnp.add, grads, correction)
  tx = local_optimizer(hp['learning_rate'], hp['weight_decay'])
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss
