"""R federated runs that share data, model and round count, advanced together one round at a time.

A single run is R = 1; a sweep puts its runs side by side. Everything a run may vary (seed, mu,
straggler model, FedAvg's dropping) is data, so all runs share one compiled round program.
"""
import ctypes
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import client
from fedprox_jax import cohort as cohort_lib
from fedprox_jax import evaluation
from fedprox_jax import models
from fedprox_jax.datasets import FederatedData


class RunSpec(NamedTuple):
  """What may differ between the runs of one simulation."""
  seed: int
  mu: float
  straggler_fraction: float
  fixed_straggler_count: bool
  drop_stragglers: bool
  adaptive_mu: bool = False

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict) -> 'RunSpec':
    return cls(seed=c.seed, mu=c.algorithm.mu, straggler_fraction=c.stragglers.fraction,
               fixed_straggler_count=c.stragglers.mode == 'fixed',
               drop_stragglers=c.algorithm.drop_stragglers, adaptive_mu=c.algorithm.adaptive_mu)


def _return_freed_memory() -> None:
  """Hands memory that the compiler freed back to the OS (glibc keeps it otherwise)."""
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):  # Not glibc: nothing to do.
    pass


def choose_num_lanes(requested: int, num_jobs: int, devices) -> int:
  """Lanes per round, a multiple of the device count. On CPU a vmapped lane costs about as much as
  running its steps in sequence, so one lane per device; accelerators take many lanes at once."""
  num_devices = len(devices)
  if requested:
    lanes = requested
  elif devices[0].platform == 'cpu':
    lanes = num_devices
  else:
    lanes = min(num_jobs, 256 * num_devices)
  return -(-lanes // num_devices) * num_devices


class Simulation:
  """Device state and compiled programs for R runs of one configuration.

  It keeps no reference to the host copy of `data`, which the caller may drop once built.
  """

  def __init__(self, config: ml_collections.ConfigDict, data: FederatedData,
               runs: list[RunSpec]):
    self.config, self.runs = config, runs
    c = config
    devices = jax.devices()
    self.num_lanes = choose_num_lanes(c.compute.num_lanes, len(runs) * c.clients_per_round,
                                      devices)
    mesh = jax.sharding.Mesh(np.array(devices), ('lanes',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self._eval_device = jax.sharding.SingleDeviceSharding(devices[0])
    as_array = lambda field, dtype: jnp.asarray([getattr(r, field) for r in runs], dtype)
    keys = [jax.random.split(jax.random.PRNGKey(r.seed)) for r in runs]
    models_of_runs = [models.create_model(c.model.name, data.num_classes, data.input_dim, k[0])
                      for k in keys]
    init = [params for _, params in models_of_runs]
    # Features stay raw on the device (uint8 pixels: a quarter of their float32 size, and a
    # quarter of the bytes that evaluation reads); the model normalises the rows it reads.
    self.apply_fn = models.on_raw_features(models_of_runs[0][0], data.feature_mean,
                                           data.feature_scale)
    tx = client.make_optimizer(c.client.learning_rate, c.client.weight_decay)
    # Everything a round reads sits on every device with one sharding, so round r's outputs
    # feed round r + 1 without a transfer.
    self.initial_params, self.mu, self._round_keys, self._run_args = jax.device_put((
        jax.tree.map(lambda *p: jnp.stack(p), *init), as_array('mu', jnp.float32),
        jnp.stack([k[1] for k in keys]),
        (as_array('straggler_fraction', jnp.float32), as_array('fixed_straggler_count', bool),
         as_array('drop_stragglers', bool))), replicated)

    train_cohort = cohort_lib.make_train_cohort(
        self.apply_fn, tx, batch_size=c.client.batch_size, num_lanes=self.num_lanes,
        max_epochs=c.client.local_epochs, mesh=mesh if len(devices) > 1 else None)
    sample = jax.vmap(lambda key, sizes, fraction, fixed, drop: cohort_lib.sample_cohort(
        key, sizes=sizes, clients_per_round=c.clients_per_round,
        local_epochs=c.client.local_epochs, batch_size=c.client.batch_size, fraction=fraction,
        fixed_count=fixed, drop_stragglers=drop,
        weight_by_batches=c.algorithm.weighting == 'batches'), in_axes=(0, None, 0, 0, 0))

    def sample_round(round_index, round_keys, run_args, sizes):
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(round_keys, round_index)
      return sample(keys, sizes, *run_args)

    self.traces = 0  # How often the round program was traced: once, whatever the cohorts.

    def round_fn(params, round_index, mu, round_keys, run_args, client_data):
      self.traces += 1
      cohort = sample_round(round_index, round_keys, run_args, client_data.sizes)
      new_params, stats = train_cohort(params, cohort, mu, client_data)
      finite = jnp.stack([jnp.all(jnp.isfinite(p), axis=tuple(range(1, p.ndim)))
                          for p in jax.tree.leaves(new_params)]).all(0)
      stats.update(finite=finite, stragglers=cohort.stragglers.sum(1),
                   active_clients=(cohort.weights > 0).sum(1))
      return new_params, stats

    # Both programs are compiled from shapes alone, before the data reach the device: the
    # compiler's working memory is freed by the time the data take theirs, which keeps the
    # process's peak memory down.
    shape = lambda a, sharding: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype,
                                                     sharding=sharding)
    n = len(data.train_y)
    client_shapes = cohort_lib.ClientData(
        shape(data.train_x, replicated), shape(data.train_y, replicated),
        shape(data.train_offsets, replicated), shape(data.train_sizes, replicated))
    eval_shapes = {'train': (shape(data.train_x, self._eval_device),
                             shape(data.train_y, self._eval_device))}
    for name in ('local_test', 'test'):
      x, y = getattr(data, f'{name}_x'), getattr(data, f'{name}_y')
      if len(x):
        eval_shapes[name] = (shape(x, self._eval_device), shape(y, self._eval_device))
    self._round = jax.jit(round_fn).lower(
        self.initial_params, jnp.int32(0), self.mu, self._round_keys, self._run_args,
        client_shapes).compile()
    chunk = c.eval.chunk_size or evaluation.AUTO_CHUNK[c.model.name]
    num_clients = data.num_clients
    self._evaluate = evaluation.make_evaluate(
        self.apply_fn, chunk, num_clients if c.eval.dissimilarity else 0).lower(
            jax.device_put(self.initial_params, self._eval_device), eval_shapes,
            jax.ShapeDtypeStruct((n,), jnp.int32, sharding=self._eval_device)).compile()
    self._sample = jax.jit(sample_round)
    _return_freed_memory()

    self._place_data(data, replicated, eval_shapes.keys())

  def _place_data(self, data: FederatedData, replicated, eval_names) -> None:
    """Every device holds the clients' raw data; rounds then move no data at all. Evaluation runs
    on the first device and reuses its copy."""
    self.client_data = cohort_lib.ClientData(*jax.device_put(
        (data.train_x, data.train_y, data.train_offsets, data.train_sizes), replicated))
    self.eval_sets = {'train': (self.client_data.x.addressable_data(0),
                                self.client_data.y.addressable_data(0))}
    # Which client each training row belongs to (rows are grouped by client).
    self._train_client = jax.device_put(
        np.repeat(np.arange(data.num_clients, dtype=np.int32), data.train_sizes),
        self._eval_device)
    for name in eval_names - {'train'}:
      self.eval_sets[name] = jax.device_put(
          (getattr(data, f'{name}_x'), getattr(data, f'{name}_y')), self._eval_device)

  def run_round(self, params, round_index: int, mu=None):
    """One round of every run: (new params [R], stats with [R] entries); `mu` [R] replaces the
    runs' proximal coefficients (it is data: no recompile)."""
    return self._round(params, jnp.int32(round_index), self.mu if mu is None else mu,
                       self._round_keys, self._run_args, self.client_data)

  def sample(self, round_index: int) -> cohort_lib.Cohort:
    """The cohorts that round `round_index` trains, one per run (what run_round draws)."""
    return self._sample(jnp.int32(round_index), self._round_keys, self._run_args,
                        self.client_data.sizes)

  def evaluate(self, params) -> dict[str, np.ndarray]:
    """Loss and accuracy of every run's global model on each dataset, as [R] arrays."""
    out = self._evaluate(jax.device_put(params, self._eval_device), self.eval_sets,
                         self._train_client)
    return {k: np.asarray(v) for k, v in out.items()}
