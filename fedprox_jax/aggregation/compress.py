"""Compressed uploads (compression.bits, compression.topk): each client's whole upload, every
tensor of it, top-k sparsified (sparsification.py) and then quantized (quantization.py) before it
is sent; the server sums what was sent. Its bytes are counted on the host (encoding.py).

It runs first among the client sides, before clipping for DP: the clip then bounds what is sent
whatever the compression did to its norm (quantization can raise it; error feedback's residual
can too), so the accountant's sensitivity 2C holds by construction, and the clip's scale folds into
the quantized tensors' min and step (no byte more).

With compression.error_feedback, error_feedback.py runs the same compression on the upload plus
the client's residual instead.
"""
import jax
import jax.numpy as jnp

from fedprox_jax.aggregation import base
from fedprox_jax.aggregation import quantization
from fedprox_jax.aggregation import sparsification

FIELDS = {'compression.bits': 'bits', 'compression.topk': 'topk'}
ENCODE = {'topk': sparsification.at_most}


def compress(upload, hp, key):
  """The upload as sent: per tensor, its top-k (all of it at topk = 1), quantized."""
  leaves, treedef = jax.tree.flatten(upload)
  keys = jax.random.split(key, len(leaves))
  sent = []
  for x, k in zip(leaves, keys):
    # A cond, not a where: a run that keeps every coordinate skips the search (lanes.py).
    kept = jax.lax.cond(hp['topk'] < 1, sparsification.top_k_mask,
                        lambda x, _: jnp.ones(x.shape, bool), x, hp['topk'])
    sent.append(quantization.quantize(x, hp['bits'], k, kept))
  return jax.tree.unflatten(treedef, sent)


def relative_error(sent, target) -> jax.Array:
  """||sent - target||^2 / ||target||^2 (0 for a zero target)."""
  error = base.tree_norm(jax.tree.map(jnp.subtract, sent, target))**2
  norm = base.tree_norm(target)**2
  return jnp.where(norm > 0, error / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny), 0.0)


def client(upload, state, hp, key, client_state):
  del state
  sent = compress(upload, hp, key)
  return sent, {'compression_error': relative_error(sent, upload), 'uploaded': 1.0}, client_state


def server(aggregate: base.Aggregate, state, hp, key):
  """Records the mean relative error of the round's uploads; under DP nothing (a statistic of
  the clients' data without noise would spend privacy the accountant does not count)."""
  del key
  private = 'clip_norm' in hp
  mean = aggregate.extras['compression_error'] / jnp.maximum(aggregate.extras['uploaded'], 1.0)
  return aggregate, state, {'compression/relative_error': jnp.nan if private else mean}


def on(values, feedback: bool) -> bool:
  compressing = values['compression.bits'] > 0 or values['compression.topk'] < 1
  return bool(compressing and bool(values['compression.error_feedback']) == feedback)


STAGE = base.Stage(name='compress',
                   order=5,
                   fields=dict(FIELDS),
                   active=lambda values: on(values, feedback=False),
                   client=client,
                   server=server,
                   encode=ENCODE,
                   skips_work=True)
