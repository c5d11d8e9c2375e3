"""q-FFL (Li, Sanjabi, Beirami, Smith, ICLR 2020, "Fair Resource Allocation in Federated
Learning", Algorithm 2, q-FedAvg): clients with a higher loss weigh more, by the power q.

Before its steps, client k computes F_k = F_k(w), its mean loss at the global model over its local
training data (before_steps). After them, with y_k its parameters and L the Lipschitz constant of
the gradients (1 / the local learning rate unless algorithm.qffl_lipschitz > 0), and F_k taken as
F_k + 1e-10 as in the authors' code:
dw_k = L (w - y_k), Delta_k = F_k^q dw_k, h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q, and
w <- w - sum Delta_k / sum h_k. q = 0 is FedAvg's weighted mean.

The paper samples clients with probability proportional to their data and averages uniformly;
clients here are sampled uniformly, so each Delta_k and h_k is weighted by the client weights of
algorithm.weighting, as every algorithm's uploads are (weighting = 'uniform' and q = 0: FedAvg
under uniform weights exactly). Its local steps are the default objective's (mu = 0: plain SGD).
"""
import jax
import jax.numpy as jnp

from fedprox_jax.algorithms import base
from fedprox_jax.core import client

LOSS_FLOOR = 1e-10


def before_steps(model, params, batch: base.Batch, context: base.LocalContext):
  """The batch's summed cross-entropy at the global model: the mean over the client's examples is
  F_k."""
  del context
  ce = client.cross_entropies(model(params, batch.x).logits, batch.y)
  return {'loss': jnp.sum(ce * batch.mask)}


def upload(result: base.ClientResult, state, client_state, hp):
  del state
  # F_k + 1e-10, as the authors' code takes it: a client whose loss is exactly 0 (float32
  # cross-entropy can be) would otherwise make h_k infinite for 0 < q < 1.
  loss, q = result.before['loss'] + LOSS_FLOOR, hp['q']
  lipschitz = jnp.where(hp['qffl_lipschitz'] > 0, hp['qffl_lipschitz'], 1.0 / result.learning_rate)
  dw = jax.tree.map(lambda d: -lipschitz * d, result.delta)  # L (w - y_k)
  squared = sum(jnp.sum(jnp.square(d)) for d in jax.tree.leaves(dw))
  loss_q = jnp.power(loss, q)
  # q F^(q-1) ||dw||^2, exactly 0 at q = 0 (where F^(q-1) is not needed).
  slope = jnp.where(q > 0, q * jnp.power(loss, q - 1.0) * squared, 0.0)
  return {
      'delta': jax.tree.map(lambda d: loss_q * d, dw),
      'h': slope + lipschitz * loss_q
  }, client_state


def server_delta(totals: base.Totals, state, hp):
  del hp
  h = totals.sums['h']
  safe = jnp.where(h > 0, h, 1.0)
  return jax.tree.map(lambda d: jnp.where(h > 0, -d / safe, 0.0), totals.sums['delta']), state


ALGORITHM = base.Algorithm(
    name='qffl',
    init_state=base.no_state,
    private_refusal=(
        "q-FFL divides its summed uploads by the clients' summed h_k, which depend on "
        'their losses: one client moves that denominator, and the update, without bound'),
    upload=upload,
    server_delta=server_delta,
    before_steps=before_steps,
    paper_server_step=True,
    hyperparameters=(
        base.Hyperparameter(
            'q', 1.0, lambda v: v >= 0, 'must be >= 0',
            "q-FFL's fairness power: 0 is FedAvg; larger q weighs high-loss "
            'clients more'),
        base.Hyperparameter(
            'qffl_lipschitz', 0.0, lambda v: v >= 0, 'must be >= 0',
            "q-FFL's L, the gradients' Lipschitz constant; 0: 1 / "
            'client.learning_rate, as the paper takes it'),
    ))
