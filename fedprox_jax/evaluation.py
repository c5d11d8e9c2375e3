"""Metrics of the global models of R runs on whole datasets, in chunks that bound memory."""
import jax
import jax.numpy as jnp

from fedprox_jax.models import ApplyFn

# Examples per evaluation chunk when config.eval.chunk_size is 0: the logistic regression takes a
# whole dataset in one matrix product; the CNN's activations need small chunks.
AUTO_CHUNK = {'logistic_regression': 1 << 17, 'cnn': 512}


def make_evaluate(apply_fn: ApplyFn, chunk_size: int):
  """evaluate(params [R], {name: (x [n, d], y [n])}) -> {name/loss, name/accuracy: [R]}.

  One compiled program for all datasets: each dataset shape would otherwise compile its own.
  """

  def sums(params, x, y):
    # Runs second ([n, R, classes]): the model's matrix product for all runs then comes out
    # without a transpose, and the reductions run along its rows.
    logits = jax.vmap(apply_fn, in_axes=(0, None), out_axes=1)(params, x)
    label_logit = jnp.take_along_axis(logits, y[:, None, None], -1)[..., 0]
    ce = jax.nn.logsumexp(logits, -1) - label_logit
    correct = (jnp.argmax(logits, -1) == y[:, None]).astype(jnp.float32)
    return ce.sum(0), correct.sum(0)

  def evaluate_one(params, x, y):
    n = x.shape[0]
    whole = n // chunk_size * chunk_size
    loss, correct = 0.0, 0.0
    if whole:  # Full chunks one after another, then the remainder.
      chunks = (x[:whole].reshape(-1, chunk_size, x.shape[1]), y[:whole].reshape(-1, chunk_size))
      loss, correct = jax.tree.map(lambda s: s.sum(0),
                                   jax.lax.map(lambda c: sums(params, *c), chunks))
    if whole < n:
      rest = sums(params, x[whole:], y[whole:])
      loss, correct = loss + rest[0], correct + rest[1]
    return loss / n, correct / n

  @jax.jit
  def evaluate(params, datasets):
    out = {}
    for name, (x, y) in datasets.items():
      out[f'{name}/loss'], out[f'{name}/accuracy'] = evaluate_one(params, x, y)
    return out

  return evaluate
