"""Metrics of the global models of R runs on whole datasets, in chunks that bound memory."""
import jax
import jax.flatten_util
import jax.numpy as jnp

from fedprox_jax.core import model as model_lib
from fedprox_jax.core.model import ApplyFn
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.tasks import models


def chunk_size(program: ProgramSettings) -> int:
  """Examples per evaluation chunk: the program's eval_chunk, or the model's own (0)."""
  return program.eval_chunk or models.MODELS[program.model].eval_chunk


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


# The datasets whose spread over clients is recorded: each client's accuracy on its own test data.
SPREAD_SETS = ('local_test',)
PERCENTILES = (10, 50, 90)


def _percentile(ordered: jax.Array, count: jax.Array, q: int) -> jax.Array:
  """numpy.percentile's linear interpolation at q of each column's first `count` values of
  `ordered` [S, R] (sorted along S). The position q/100 (count - 1) is kept in integers, exact at
  any count (in float32 its fraction would be rounded, to 1/128 at 10^5 clients), and split so that
  q (count - 1) never has to fit in int32."""
  last = jnp.maximum(count - 1, 0)
  hundreds, rest = last // 100, q * (last % 100)
  low = q * hundreds + rest // 100
  fraction = (rest % 100).astype(jnp.float32) / 100
  high = jnp.minimum(low + 1, last)
  return ordered[low] + (ordered[high] - ordered[low]) * fraction


def client_spread(correct: jax.Array, count: jax.Array) -> dict[str, jax.Array]:
  """{accuracy_p10, accuracy_p50, accuracy_p90, accuracy_std: [R]} of the accuracies
  correct / count of the clients whose count > 0 (correct [S, R] and count [S], summed client by
  client): unweighted, each client once whatever its size; the std is the population's (ddof=0).
  With no such client they are 0, as the accuracy of no example is."""
  valid = count > 0
  num_valid = valid.sum()
  accuracy = correct / jnp.maximum(count, 1)[:, None]
  # Sorted as int32: non-negative floats order as their bits do, and XLA's CPU sort of int32 takes
  # a seventh of the time of float32's (whose comparator orders NaNs). The clients left out sort
  # last; their bits read back as a NaN, read only when no client counts (and then replaced).
  bits = jnp.where(valid[:, None], jax.lax.bitcast_convert_type(accuracy, jnp.int32),
                   jnp.iinfo(jnp.int32).max)
  ordered = jax.lax.bitcast_convert_type(jnp.sort(bits, axis=0), jnp.float32)
  out = {f'accuracy_p{q}': _percentile(ordered, num_valid, q) for q in PERCENTILES}
  mean = jnp.where(valid[:, None], accuracy, 0.0).sum(0) / jnp.maximum(num_valid, 1)
  deviation = jnp.where(valid[:, None], accuracy - mean, 0.0)
  out['accuracy_std'] = jnp.sqrt(jnp.square(deviation).sum(0) / jnp.maximum(num_valid, 1))
  return {k: jnp.where(num_valid > 0, v, 0.0) for k, v in out.items()}


def _segments(client: jax.Array, selection, num_clients: int) -> tuple[jax.Array, int]:
  """(The segment of each row read, how many segments) for sums client by client: the row's
  client; with a selection (a sample of clients, their rows client by client), its client's rank
  in the sample, so that a sample's sums are as many as its rows, not as the population's clients
  (1000 clients of 10^6 evaluated would otherwise sort 10^6 accuracies)."""
  if selection is None:
    return client, num_clients
  of_row = client[selection[0]]
  rank = jnp.cumsum(of_row[1:] != of_row[:-1], dtype=jnp.int32)
  return jnp.concatenate([jnp.zeros(1, jnp.int32), rank]), min(len(of_row), num_clients)


def make_evaluate(apply_fn: ApplyFn,
                  chunk_size: int,
                  num_clients: int,
                  dissimilarity: bool = False):
  """evaluate(params [R], {name: (x [n, d], y [n])}, clients, selections) -> {name/loss,
  name/accuracy: [R]}; for the datasets of SPREAD_SETS also the spread of the clients' own
  accuracies (client_spread: name/accuracy_p10, _p50, _p90, _std); and train/dissimilarity with
  `dissimilarity`.

  `clients` maps 'train' and each of SPREAD_SETS to the client of each of its rows [n] (rows are
  grouped by client, ids below `num_clients`). `selections` maps a dataset's name to
  (rows [M], weights [M]): only those rows count (a sample of clients, padded with weight 0); the
  others are evaluated whole. One compiled program for all datasets: each dataset shape would
  otherwise compile its own.
  """
  dissimilarity_fn = (make_dissimilarity(apply_fn, num_clients, min(chunk_size, 1024))
                      if dissimilarity else None)

  def per_example(params, x, y):
    """(cross-entropy, correct) [chunk, R]. Runs second ([n, R, classes]): the model's matrix
    product for all runs then comes out without a transpose, and the sums run along its rows."""
    logits = model_lib.over_params(apply_fn, apply_fn, (0, None), out_axes=1)(params, x)
    label_logit = jnp.take_along_axis(logits, y[:, None, None], -1)[..., 0]
    ce = jax.nn.logsumexp(logits, -1) - label_logit
    return ce, (jnp.argmax(logits, -1) == y[:, None]).astype(jnp.float32)

  def evaluate_one(params, x, y, selection=None, client=None):
    """{loss, accuracy: [R]} over the rows (or the selection's), and with `client` (the client of
    each row) the spread of the clients' accuracies, from sums per client made chunk by chunk."""
    n = x.shape[0] if selection is None else selection[0].shape[0]
    chunk = min(chunk_size, n)
    segments, num_segments = (_segments(client, selection, num_clients) if client is not None else
                              (None, 0))

    def add_chunk(i, totals):
      start, fresh = _window(i, n, chunk)  # Slicing a reshaped copy tripled the time.
      take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk)
      if selection is None:
        rows_x, rows_y, weight = take(x), take(y), fresh
      else:
        rows = take(selection[0])
        rows_x, rows_y, weight = x[rows], y[rows], fresh * take(selection[1])
      ce, correct = per_example(params, rows_x, rows_y)
      loss, right, by_client = totals
      if segments is not None:
        by_client = by_client + jax.ops.segment_sum(
            weight[:, None] * correct, take(segments), num_segments, indices_are_sorted=True)
      return loss + weight @ ce, right + weight @ correct, by_client

    num_runs = jax.tree.leaves(params)[0].shape[0]
    zeros = jnp.zeros(num_runs, jnp.float32)
    by_client = None if segments is None else jnp.zeros((num_segments, num_runs), jnp.float32)
    loss, right, by_client = jax.lax.fori_loop(0, -(-n // chunk), add_chunk,
                                               (zeros, zeros, by_client))
    total = n if selection is None else jnp.maximum(selection[1].sum(), 1.0)
    out = {'loss': loss / total, 'accuracy': right / total}
    if segments is not None:
      weights = jnp.ones(n, jnp.float32) if selection is None else selection[1]
      count = jax.ops.segment_sum(weights, segments, num_segments, indices_are_sorted=True)
      out.update(client_spread(by_client, count))
    return out

  @jax.jit
  def evaluate(params, datasets, clients, selections):
    out = {}
    for name, (x, y) in datasets.items():
      metrics = evaluate_one(params, x, y, selections.get(name),
                             clients[name] if name in SPREAD_SETS else None)
      out.update({f'{name}/{key}': value for key, value in metrics.items()})
    if dissimilarity_fn:
      out['train/dissimilarity'] = dissimilarity_fn(params, *datasets['train'], clients['train'])
    return out

  return evaluate
