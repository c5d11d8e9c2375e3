"""FedNova (Wang et al., NeurIPS 2020): normalised averaging, so that clients doing more local
steps (non-stragglers, larger clients) do not pull the model their way.

Client i's normalised update d_i = (y_i - w) / ||a_i||_1; the server applies
Delta = tau_eff * sum_i p_i d_i with tau_eff = sum_i p_i ||a_i||_1 and p_i the aggregation weights.
Local SGD whose every step also contracts y by (1 - alpha), alpha = lr * (mu + weight_decay) (the
proximal term and coupled weight decay), has ||a_i||_1 = (1 - (1 - alpha)^tau_i) / alpha, and tau_i
for alpha = 0. (The authors' code, JYWa/FedNova, leaves weight decay out and, with mu > 0, takes
tau_eff = sum p_i tau_i; this follows the paper, so equal step counts give FedProx exactly.)
"""
import jax
import jax.numpy as jnp

from fedprox_jax.algorithms import base


def local_step_norm(steps, learning_rate, mu, weight_decay):
  """||a_i||_1 of tau_i local steps, each contracting the parameters by (1 - alpha)."""
  steps = steps.astype(jnp.float32)
  alpha = learning_rate * (mu + weight_decay)
  safe = jnp.where(alpha > 0, alpha, 1.0)
  # 1 - (1 - alpha)^tau, accurately for small alpha.
  contracted = -jnp.expm1(steps * jnp.log1p(-jnp.minimum(safe, 1.0)))
  return jnp.where(alpha > 0, contracted / safe, steps)


def upload(result: base.ClientResult, state, client_state, hp):
  del state, hp
  norm = local_step_norm(result.steps, result.learning_rate, result.mu, result.weight_decay)
  safe = jnp.where(norm > 0, norm, 1.0)  # A client with no steps has delta 0 and norm 0.
  return {'normalized': jax.tree.map(lambda d: d / safe, result.delta), 'norm': norm}, client_state


def server_delta(totals: base.Totals, state, hp):
  del hp
  tau_eff = base.mean(totals.sums['norm'], totals.weight)
  direction = base.mean(totals.sums['normalized'], totals.weight)
  return jax.tree.map(lambda d: tau_eff * d, direction), state


ALGORITHM = base.Algorithm(
    name='fednova',
    init_state=base.no_state,
    private_refusal=(
        "FedNova divides each upload by its client's number of local steps (which "
        'depend on its data size) and scales the mean back by their mean: clipping bounds neither'),
    upload=upload,
    server_delta=server_delta)
