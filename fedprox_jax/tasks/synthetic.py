"""Synthetic(alpha, beta) and Synthetic-IID, the FedProx paper's generated federated data.

Device k has lognormal(4, 2) + 50 examples (data.size_log_mean, size_log_sigma, min_examples;
data.max_examples bounds them, for populations of millions). Its model is W_k ~ N(u_k, 1)
(dim x classes), b_k ~ N(u_k, 1) with u_k ~ N(0, alpha): alpha sets how much local models differ.
Its inputs are x ~ N(v_k, Sigma), Sigma diagonal with Sigma_jj = j^-1.2, v_k ~ N(B_k, 1) with
B_k ~ N(0, beta): beta sets how much local data differ. y = argmax(softmax(x W_k + b_k)). The IID
variant shares one W, b ~ N(0, 1) and has v = 0. As in the paper's code, alpha and beta are
standard deviations.
Every device's examples are split 90/10 into local train and test. No download, no cache needed.
"""
import functools
import math
from typing import NamedTuple

import ml_collections
import numpy as np

from fedprox_jax.config_fields import require
from fedprox_jax.tasks.data_plan import DataPlan
from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.federated_data import local_splits
from fedprox_jax.tasks.task import Task

CHUNK = 4096  # Devices generated together: bounds the working memory, not the draws.
EXACT_PLAN = 1 << 22  # Populations up to this plan their sizes exactly (32 MB of draws, 0.1 s).
TOO_LARGE = 2.0**62  # A size draw past this (a huge data.size_log_sigma) is capped before int64.


def device_sizes(rng: np.random.Generator, num_clients: int, *, log_mean: float, log_sigma: float,
                 min_examples: int, max_examples: int) -> np.ndarray:
  """Examples of each device: lognormal(log_mean, log_sigma) + min_examples (the paper's
  lognormal(4, 2) + 50), at most max_examples when that is > 0."""
  draws = rng.lognormal(log_mean, log_sigma, num_clients)
  # (Capped so that casting cannot wrap: below 2^62 the draws are cast as they are.)
  sizes = np.minimum(draws, TOO_LARGE).astype(np.int64) + min_examples
  return np.minimum(sizes, max_examples) if max_examples > 0 else sizes


class SizePlan(NamedTuple):
  """The devices' sizes as config.data makes them, known before any example is generated."""
  examples: int  # All examples (an expectation when not exact).
  train_examples: int
  largest_train: int  # The most training examples of a device (an estimate when not exact).
  cohort_train: int  # The most training examples that clients_per_round devices hold.
  largest_chunk: int  # The most examples of the CHUNK devices generated together.
  train_sizes: np.ndarray | None  # Every device's training examples, when exact.

  @property
  def exact(self) -> bool:
    return self.train_sizes is not None


def _sizes_of(d: ml_collections.ConfigDict):
  return lambda rng: device_sizes(rng,
                                  d.num_clients,
                                  log_mean=d.size_log_mean,
                                  log_sigma=d.size_log_sigma,
                                  min_examples=d.min_examples,
                                  max_examples=d.max_examples)


def _expected_size(d: ml_collections.ConfigDict) -> tuple[float, float]:
  """(Mean, a likely maximum) of a device's examples: E[min(floor(L) + m, M)] for L lognormal,
  floor(L) taken as L - 1/2; the maximum at the 1 - 1/N quantile."""
  mu, sigma, m, big = d.size_log_mean, d.size_log_sigma, d.min_examples, d.max_examples
  phi = lambda z: 0.5 * math.erfc(-z / math.sqrt(2))
  try:
    mean = math.exp(mu + sigma**2 / 2)
    top = math.exp(mu + sigma * math.sqrt(2 * math.log(max(d.num_clients, 2))))
  except OverflowError:
    mean = top = math.inf
  if big > 0:
    cap = big - m + 0.5
    if sigma == 0:
      return min(mean, cap) - 0.5 + m, min(top, cap) - 0.5 + m
    log_cap = math.log(cap)
    below = math.exp(min(mu + sigma**2 / 2, 700)) * phi((log_cap - mu - sigma**2) / sigma)
    mean = below + cap * (1 - phi((log_cap - mu) / sigma))
    top = min(top, cap)
  return max(mean - 0.5, 0.0) + m, max(top - 0.5, 0.0) + m


def planned_sizes(d: ml_collections.ConfigDict, clients_per_round: int) -> SizePlan:
  """config.data's sizes without generating: the generator's own first draw (exact) up to
  EXACT_PLAN devices, their expectation beyond."""
  return _planned_sizes(tuple((f, d[f]) for f in _PLAN_FIELDS), clients_per_round)


_PLAN_FIELDS = ('num_clients', 'size_log_mean', 'size_log_sigma', 'min_examples', 'max_examples',
                'train_fraction', 'seed')


@functools.lru_cache(maxsize=16)  # A sweep validates every run's config.
def _planned_sizes(fields: tuple, clients_per_round: int) -> SizePlan:
  d = ml_collections.ConfigDict(dict(fields))
  if d.num_clients <= EXACT_PLAN:
    sizes = _sizes_of(d)(np.random.default_rng(d.seed))
    train = (d.train_fraction * sizes).astype(np.int64)
    chunks = np.add.reduceat(sizes, np.arange(0, len(sizes), CHUNK), dtype=np.float64)
    k = min(clients_per_round, len(train))
    return SizePlan(examples=int(sizes.sum(dtype=np.float64)),
                    train_examples=int(train.sum(dtype=np.float64)),
                    largest_train=int(train.max()),
                    cohort_train=int(np.sort(train)[len(train) - k:].sum(dtype=np.float64)),
                    largest_chunk=int(chunks.max()),
                    train_sizes=train)
  mean, top = _expected_size(d)
  cap = 2.0**100  # (Sizes beyond any machine: the estimate refuses them, and must stay finite.)
  examples = min(d.num_clients * mean, cap)
  largest = min(d.train_fraction * top, cap)
  return SizePlan(examples=int(examples),
                  train_examples=int(d.train_fraction * examples),
                  largest_train=int(largest),
                  cohort_train=int(min(clients_per_round * largest, d.train_fraction * examples)),
                  largest_chunk=int(min(CHUNK * mean, examples)),
                  train_sizes=None)


def labels_of(x: np.ndarray, device: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
  """argmax(x W_k + b_k) of each row with its own device's model (the argmax of the softmax is
  the argmax of the logits); in blocks of rows, which bound the gathered models' memory."""
  y = np.empty(len(x), np.int32)
  for s in range(0, len(x), 32768):
    d = device[s:s + 32768]
    y[s:s + 32768] = np.argmax(np.einsum('rj,rjc->rc', x[s:s + 32768], w[d]) + b[d], axis=1)
  return y


def generate(*, alpha: float, beta: float, iid: bool, sizes_of, dim: int, num_classes: int,
             seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(sizes [devices], features [sum(sizes), dim] float32, labels int32): every device's examples,
  device after device; `sizes_of(rng)` draws the sizes first.

  The draws are those of a loop over devices on one stream (the paper's generator): device k
  draws W_k, b_k, v_k, then its examples' noise. A block of CHUNK devices takes all its normals
  in one call and cuts them up by index, which gives the same numbers as the loop (a standard
  normal draw at a time, shifted: N(m, 1) = m + N(0, 1)), with no Python object per device.
  """
  rng = np.random.default_rng(seed)
  sizes = sizes_of(rng)
  u = rng.normal(0, alpha, len(sizes))
  big_b = rng.normal(0, beta, len(sizes))
  scale = np.sqrt(np.arange(1, dim + 1, dtype=np.float64)**-1.2)  # Sigma_jj = j^-1.2.
  shared_w = rng.normal(0, 1, (dim, num_classes))
  shared_b = rng.normal(0, 1, num_classes)
  model_draws = 0 if iid else dim * num_classes + num_classes + dim  # W_k, b_k, v_k.
  x = np.empty((int(sizes.sum()), dim), np.float32)
  y = np.empty(len(x), np.int32)
  row = 0
  for start in range(0, len(sizes), CHUNK):
    n = sizes[start:start + CHUNK]
    draws = model_draws + n * dim
    z = rng.standard_normal(int(draws.sum()))
    first = np.cumsum(draws) - draws  # Each device's first normal in z.
    take = lambda offset, count: z[(first + offset)[:, None] + np.arange(count)]
    if iid:
      w, b, v = shared_w[None], shared_b[None], np.zeros((1, dim))
    else:
      w = (u[start:start + CHUNK, None] + take(0, dim * num_classes)).reshape(-1, dim, num_classes)
      b = u[start:start + CHUNK, None] + take(dim * num_classes, num_classes)
      v = big_b[start:start + CHUNK, None] + take(dim * num_classes + num_classes, dim)
    own = np.repeat(np.arange(len(n)), n)  # The device of each row of the block.
    position = np.arange(len(own)) - np.repeat(np.cumsum(n) - n, n)  # The row's place in it.
    noise = z[(first[own] + model_draws + position * dim)[:, None] + np.arange(dim)]
    model = np.zeros_like(own) if iid else own  # Whose W, b and v the row has.
    block_x = v[model] + noise * scale
    y[row:row + len(own)] = labels_of(block_x, model, w, b)
    x[row:row + len(own)] = block_x
    row += len(own)
  return sizes, x, y


def validate(c: ml_collections.ConfigDict) -> None:
  d = c.data
  require(d.alpha >= 0, 'data.alpha', f'= {d.alpha} must be >= 0')
  require(d.beta >= 0, 'data.beta', f'= {d.beta} must be >= 0')
  require(1 <= d.num_clients <= 2**31 - 1, 'data.num_clients',
          f'= {d.num_clients} must be in [1, 2^31 - 1] (clients are counted in int32)')
  require(d.dim >= 1, 'data.dim', f'= {d.dim} must be >= 1')
  require(d.num_classes >= 2, 'data.num_classes', f'= {d.num_classes} must be >= 2')
  require(0 < d.train_fraction < 1, 'data.train_fraction',
          f'= {d.train_fraction} must be in (0, 1)')
  require(d.min_examples >= 2, 'data.min_examples', f'= {d.min_examples} must be >= 2')
  require(d.max_examples == 0 or d.max_examples >= d.min_examples, 'data.max_examples',
          f'= {d.max_examples} must be 0 (no bound) or >= data.min_examples = {d.min_examples}')
  require(d.size_log_sigma >= 0, 'data.size_log_sigma', f'= {d.size_log_sigma} must be >= 0')
  require(
      int(d.train_fraction * d.min_examples) >= 1, 'data.train_fraction',
      f'= {d.train_fraction} leaves devices of {d.min_examples} examples no training data')
  require(c.model.name == 'logistic_regression', 'model.name',
          f"= {c.model.name!r}: synthetic data have no image shape; use 'logistic_regression'")


def load(c: ml_collections.ConfigDict) -> FederatedData:
  """The federated dataset of config.data (name 'synthetic'), split 90/10 on every device."""
  sizes, x, y = generate(alpha=c.alpha,
                         beta=c.beta,
                         iid=c.iid,
                         sizes_of=_sizes_of(c),
                         dim=c.dim,
                         num_classes=c.num_classes,
                         seed=c.seed)
  train_rows, test_rows, train_sizes = local_splits(sizes, c.train_fraction, c.seed)
  # Rows are taken in order of the sorted split; x[rows] copies, so free x before the test set.
  train_x, train_y = x[train_rows], y[train_rows]
  del train_rows
  local_test_x, local_test_y = x[test_rows], y[test_rows]
  del x, y
  return FederatedData(train_x=train_x,
                       train_y=train_y,
                       train_sizes=train_sizes,
                       local_test_x=local_test_x,
                       local_test_y=local_test_y,
                       local_test_sizes=(sizes - train_sizes).astype(np.int32),
                       test_x=np.zeros((0, c.dim), np.float32),
                       test_y=np.zeros(0, np.int32),
                       num_classes=c.num_classes)


def plan(d: ml_collections.ConfigDict, clients_per_round: int) -> DataPlan:
  """What config.data's devices take, from their planned sizes (nothing generated)."""
  sizes = planned_sizes(d, clients_per_round)
  row = 4 * d.dim + 4  # float32 features, int32 label.
  # Generation holds every example (row bytes), a block of CHUNK devices' float64 draws, gathers
  # and sums (about 32 bytes a feature), then the split copies the training rows and keeps their
  # indices (int64). Measured: 170 B an example at dim 20 (3.4 GB for synthetic:large), 1.1 to
  # 2 kB at dim 60 with the paper's sizes (4.5 GB for 10^4 devices): within 30% of this.
  load = sizes.examples * (1.9 * row + 8) + sizes.largest_chunk * 32 * d.dim
  about = '' if sizes.exact else 'about '
  return DataPlan(train_rows=sizes.train_examples,
                  eval_rows=sizes.examples - sizes.train_examples,
                  row_bytes=row,
                  other_bytes=0,
                  largest=sizes.largest_train,
                  cohort_rows=sizes.cohort_train,
                  load_bytes=int(load),
                  described=(f'data.num_clients = {d.num_clients:,} devices, {about}'
                             f'{sizes.examples:,} examples of {d.dim} features'),
                  fix=('use fewer devices (data.num_clients) or smaller ones (data.max_examples, '
                       'data.size_log_mean)'),
                  train_sizes=sizes.train_sizes)


TASK = Task(name='synthetic',
            validate=validate,
            load=load,
            model_dims=lambda c: (c.num_classes, c.dim),
            plan=plan)
