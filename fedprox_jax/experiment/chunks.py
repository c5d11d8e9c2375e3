"""A sweep's runs, split into programs: one per structure (algorithm functions and server
optimizer), each cut into chunks of as many runs as the device's memory holds."""
import os
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax import tasks
from fedprox_jax.engine import client_states
from fedprox_jax.engine import evaluation
from fedprox_jax.engine import model_cost
from fedprox_jax.experiment import settings
from fedprox_jax.tasks import models


class Chunk(NamedTuple):
  runs: list  # grid.SweepRun of each run
  label: str  # Its checkpoints' directory: the runs' places in the sweep's grouped order.
  description: str


def _num_params(config: ml_collections.ConfigDict):
  num_classes, input_dim = tasks.model_dims(config.data)
  shapes = jax.eval_shape(
      lambda key: models.create_model(config.model.name, num_classes, input_dim, key,
                                      **models.options(config.model))[1], jax.random.PRNGKey(0))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))


def runs_per_chunk(config: ml_collections.ConfigDict, requested: int) -> int:
  """How many runs of this config's structure one program may hold: `requested`, or a quarter of
  the device's memory over a rough per-run footprint (parameters in every lane, the evaluation's
  activations), and no more clients' states than memory holds."""
  num_params = _num_params(config)
  state_bytes = 0
  if 'num_clients' in config.data and client_states.keepers(
      algorithms.get(config.algorithm.name), aggregation.chain(settings.stages(config))):
    # The algorithm's and the stages' (error feedback's residuals), as the engine counts them. (A
    # task that knows its clients only once loaded: counted then, by ClientStates.)
    cost = model_cost.for_program(settings.for_program(config), settings.for_run(config),
                                  *tasks.model_dims(config.data))
    state_bytes = cost.client_state_bytes * config.data.num_clients
  if requested:
    return requested
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  memory = (stats or
            {}).get('bytes_limit') or os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  lanes = max(config.compute.num_lanes, jax.device_count())
  eval_chunk = evaluation.chunk_size(settings.for_program(config))
  per_run = 4 * num_params * (4 + 2 * lanes) + 4 * eval_chunk * 10 * 3
  # Evaluation chunk activations.
  per_run += 4 * eval_chunk * models.MODELS[config.model.name].eval_activation_floats
  most = max(1, int(memory // 4 // per_run))
  if state_bytes:
    most = min(most, max(1, client_states.host_budget() // state_bytes))
  return most


def _describe(runs: list) -> str:
  """'fedavg, fedprox with server sgd': the algorithms a program runs (one structure)."""
  names = sorted({run.config.algorithm.name for run in runs})
  return f'{", ".join(names)} with server {runs[0].config.server.optimizer}'


def split(runs: list, requested: int) -> list[Chunk]:
  """The runs grouped by structure (in order of first appearance), each group in chunks."""
  groups: dict[tuple, list] = {}
  for run in runs:
    groups.setdefault(settings.structure(run.config), []).append(run)
  chunks, start = [], 0
  for group in groups.values():
    config = group[0].config
    size = runs_per_chunk(config, requested)
    for i in range(0, len(group), size):
      part = group[i:i + size]
      chunks.append(Chunk(part, f'runs{start}-{start + len(part)}', _describe(part)))
      start += len(part)
  return chunks
