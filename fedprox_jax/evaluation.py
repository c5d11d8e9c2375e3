"""Metrics of the global models of R runs on whole datasets, in fixed-size chunks."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedprox_jax.models import ApplyFn


class EvalSet(NamedTuple):
  """A dataset padded to whole chunks: x [chunks, chunk, d], y and mask [chunks, chunk]."""
  x: jax.Array
  y: jax.Array
  mask: jax.Array


def make_eval_set(x: np.ndarray, y: np.ndarray, chunk_size: int) -> EvalSet:
  n = len(x)
  chunk = max(1, min(chunk_size, n))
  chunks = max(1, -(-n // chunk))
  pad = chunks * chunk - n
  mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
  x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  y = np.concatenate([y, np.zeros(pad, y.dtype)])
  return EvalSet(jnp.asarray(x.reshape(chunks, chunk, *x.shape[1:])),
                 jnp.asarray(y.reshape(chunks, chunk)), jnp.asarray(mask.reshape(chunks, chunk)))


def make_evaluate(apply_fn: ApplyFn):
  """evaluate(params [R], eval_set) -> (loss [R], accuracy [R]), means over real examples."""

  def evaluate(params, data: EvalSet):
    def chunk_sums(chunk):
      x, y, mask = chunk
      logits = jax.vmap(apply_fn, in_axes=(0, None))(params, x)  # [R, chunk, classes]
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None])
      correct = (jnp.argmax(logits, -1) == y[None]).astype(jnp.float32)
      return jnp.sum(ce * mask, -1), jnp.sum(correct * mask, -1)

    loss, correct = jax.lax.map(chunk_sums, (data.x, data.y, data.mask))
    count = jnp.sum(data.mask)
    return loss.sum(0) / count, correct.sum(0) / count

  return evaluate
