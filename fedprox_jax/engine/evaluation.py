"""Metrics of the global models of R runs on whole datasets, in chunks that bound memory."""
import jax
import jax.flatten_util
import jax.numpy as jnp

from fedprox_jax.tasks.models import ApplyFn

# Examples per evaluation chunk when config.eval.chunk_size is 0. Each chunk's float32 features
# (made from raw pixels as it is read) stay in cache: 2048 rows evaluated fastest on a 2-core
# CPU; larger chunks were up to 3x slower. The CNN's activations need small chunks.
AUTO_CHUNK = {'logistic_regression': 2048, 'cnn': 512, 'lstm': 512}


def chunk_size(config) -> int:
  """Examples per evaluation chunk: config.eval.chunk_size, or the model's own (0)."""
  return config.eval.chunk_size or AUTO_CHUNK[config.model.name]


def _window(i: jax.Array, n: int, chunk: int):
  """Chunk i of rows [0, n) as (start, fresh [chunk] float32): a window into the data, not a
  reshaped copy of it; the last one is shifted back to fit, and rows that an earlier chunk had are
  not fresh."""
  start = jnp.minimum(i * chunk, n - chunk)
  return start, ((start + jnp.arange(chunk)) >= i * chunk).astype(jnp.float32)


def make_dissimilarity(apply_fn: ApplyFn, num_clients: int, chunk_size: int):
  """dissimilarity(params [R], x [n, d], y [n], client [n]) -> [R]: the paper's measure of
  statistical heterogeneity, (1/N) sum_k ||grad F_k(w) - grad f(w)||^2, where grad F_k is client
  k's full-batch gradient of its mean training loss and grad f the example-weighted mean of them.

  Per-example gradients, a chunk of rows at a time, summed per client (rows are grouped by
  client); runs one after another, so memory is one chunk of gradients plus [N, params].
  """

  def one_run(params):
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def example_loss(f, x, y):
      logits = apply_fn(unravel(f), x[None])[0]
      return jax.nn.logsumexp(logits) - logits[y]

    def add_chunk(i, sums, x, y, client):
      n = x.shape[0]
      chunk = min(chunk_size, n)
      start, fresh = _window(i, n, chunk)
      take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk)
      grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(flat, take(x), take(y))
      return sums + jax.ops.segment_sum(
          grads * fresh[:, None], take(client), num_clients, indices_are_sorted=True)

    def measure(x, y, client):
      n = x.shape[0]
      chunks = -(-n // min(chunk_size, n))
      sums = jax.lax.fori_loop(0, chunks, lambda i, s: add_chunk(i, s, x, y, client),
                               jnp.zeros((num_clients, flat.size), flat.dtype))
      counts = jax.ops.segment_sum(jnp.ones(n), client, num_clients, indices_are_sorted=True)
      local = sums / jnp.maximum(counts, 1)[:, None]
      mean = sums.sum(0) / n
      return jnp.mean(jnp.sum(jnp.square(local - mean), -1))

    return measure

  def dissimilarity(params, x, y, client):
    return jax.lax.map(lambda p: one_run(p)(x, y, client), params)

  return dissimilarity


def make_evaluate(apply_fn: ApplyFn, chunk_size: int, dissimilarity_clients: int = 0):
  """evaluate(params [R], {name: (x [n, d], y [n])}, client_of_train_row, selections) ->
  {name/loss, name/accuracy: [R]}, and train/dissimilarity with `dissimilarity_clients` > 0.

  `selections` maps a dataset's name to (rows [M], weights [M]): only those rows count (a sample
  of clients, padded with weight 0); the others are evaluated whole. One compiled program for all
  datasets: each dataset shape would otherwise compile its own.
  """
  dissimilarity = (make_dissimilarity(apply_fn, dissimilarity_clients, min(chunk_size, 1024))
                   if dissimilarity_clients else None)

  def sums(params, x, y, fresh):
    # Runs second ([n, R, classes]): the model's matrix product for all runs then comes out
    # without a transpose, and the reductions run along its rows.
    logits = jax.vmap(apply_fn, in_axes=(0, None), out_axes=1)(params, x)
    label_logit = jnp.take_along_axis(logits, y[:, None, None], -1)[..., 0]
    ce = jax.nn.logsumexp(logits, -1) - label_logit
    correct = (jnp.argmax(logits, -1) == y[:, None]).astype(jnp.float32)
    return fresh @ ce, fresh @ correct

  def evaluate_one(params, x, y, selection=None):
    n = x.shape[0] if selection is None else selection[0].shape[0]
    chunk = min(chunk_size, n)

    def add_chunk(i, totals):
      start, fresh = _window(i, n, chunk)  # Slicing a reshaped copy tripled the time.
      take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk)
      if selection is None:
        return jax.tree.map(jnp.add, totals, sums(params, take(x), take(y), fresh))
      rows = take(selection[0])
      return jax.tree.map(jnp.add, totals, sums(params, x[rows], y[rows],
                                                fresh * take(selection[1])))

    num_runs = jax.tree.leaves(params)[0].shape[0]
    zeros = jnp.zeros(num_runs, jnp.float32)
    loss, correct = jax.lax.fori_loop(0, -(-n // chunk), add_chunk, (zeros, zeros))
    total = n if selection is None else jnp.maximum(selection[1].sum(), 1.0)
    return loss / total, correct / total

  @jax.jit
  def evaluate(params, datasets, train_client, selections):
    out = {}
    for name, (x, y) in datasets.items():
      out[f'{name}/loss'], out[f'{name}/accuracy'] = evaluate_one(params, x, y,
                                                                  selections.get(name))
    if dissimilarity:
      out['train/dissimilarity'] = dissimilarity(params, *datasets['train'], train_client)
    return out

  return evaluate
