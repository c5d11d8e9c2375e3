"""What a start of R runs side by side would compile, hold and take, known without building
anything: the programs and their shapes, the memory estimate with the Simulation's own checks
(engine/memory_estimate.py, engine/resources.py), and a rough wall time. For --dry_run.

The wall time is a rough model, calibrated on the benchmark figures of a 2-core CPU (README:
Performance): a client step costs STEP_OVERHEAD_S plus its arithmetic (3 forward passes of its
batch, counted from the model's program) at STEP_FLOPS_PER_S, the CPU devices' lanes running side
by side; an evaluation runs every evaluated example through each run's model at EVAL_FLOPS_PER_S,
or reads them at EVAL_BYTES_PER_S if that is slower; the process takes START_S to start, the data
their own time (dry_run.py), and COMPILE_S to compile each chunk's programs (an empty compilation
cache).
Against the measured presets it is within a factor of about 2; on an accelerator, which no figure
here was measured on, it is an upper bound.
"""
import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import tasks
from fedprox_jax.engine import cohort_rows
from fedprox_jax.engine import evaluation
from fedprox_jax.engine import memory_estimate
from fedprox_jax.engine import model_cost
from fedprox_jax.engine import placement
from fedprox_jax.engine import resources
from fedprox_jax.engine.machine import Devices
from fedprox_jax.engine.machine import size_text
from fedprox_jax.experiment import settings
from fedprox_jax.tasks import models
from fedprox_jax.tasks.data_plan import DataPlan

# A client step's cost beside its arithmetic: the logistic regression's steps (0.5 MFLOP) took
# 45 us on the 2-core CPU (44,400 client steps per second on 2 devices).
STEP_OVERHEAD_S = 40e-6
# A CPU device's arithmetic in a client step: the Shakespeare LSTM's (246 MFLOP) ran at 44.7
# GFLOP/s.
STEP_FLOPS_PER_S = 45e9
# Evaluation's: 0.28 s for the 45-run sweep's 69k examples, 4.4 s for the LSTM's 46 clients.
EVAL_FLOPS_PER_S = 100e9
# Evaluation's reading of the examples: 24 ms for the default run's 54 MB, 1.7 s for the 1.7 GB of
# synthetic:large.
EVAL_BYTES_PER_S = 2e9
# Python, JAX and the libraries; then compiling a chunk's programs with an empty compilation cache
# (the default run: 9.8 s in all, 5.0 s of it compiling).
START_S = 4.0
COMPILE_S = 5.0
# The data: synthetic examples generated and split (40 s for synthetic:large's 20.5 million), and
# MNIST prepared by TFDS on a first run (20 s: TensorFlow's import, the files, the partition).
GENERATE_S_PER_EXAMPLE = 2e-6
MNIST_PREPARE_S = 20.0


class ProgramPlan(NamedTuple):
  """One compiled round program's runs (a sweep's chunk), and what they need."""
  num_runs: int
  lanes: int
  batch: int
  client_data: str  # 'replicated' or 'per_round' (compute.client_data, chosen).
  programs: list[str]  # Each compiled program, described.
  host_bytes: float  # The host's peak.
  device_bytes: float  # Each accelerator's peak (0 on CPU devices: the host's memory).
  largest: str  # What holds the most.
  steps_per_round: float  # Expected client steps of a round, all runs.
  round_s: float | None  # Rough seconds of a round's training, all runs (None: data unknown).
  eval_s: float | None  # Rough seconds of all the evaluations, all runs.


def _client_data(c: ml_collections.ConfigDict, data: DataPlan, devices: Devices,
                 num_runs: int) -> str:
  """cohort_rows.choose's rule, from the data's plan (the sizes of a population too large to draw
  are an expectation there)."""
  if c.compute.client_data != 'auto':
    return c.compute.client_data
  small = num_runs * data.cohort_rows <= cohort_rows.AUTO_SHARE * data.train_rows
  return 'per_round' if devices.cpu and devices.count > 1 and small else 'replicated'


def plan(configs: list[ml_collections.ConfigDict], data: DataPlan, devices: Devices,
         num_clients: int) -> ProgramPlan:
  """The Simulation's checks of the runs of `configs` side by side (int32 counts, memory), raising
  its ConfigError, and what it would compile; nothing is built. The first config's structure is
  the program's (as the Simulation's)."""
  c, num_runs = configs[0], len(configs)
  k, e = c.clients_per_round, c.client.local_epochs
  program = settings.for_program(c)
  batch = resources.batch_size(c.client.batch_size, data.largest)
  resources.check_rows(program, data, batch)
  lanes = placement.choose_num_lanes(c.compute.num_lanes, num_runs * k, jax.devices())
  mode = _client_data(c, data, devices, num_runs)
  num_classes, input_dim = tasks.model_dims(c.data)
  cost = model_cost.for_program(program, settings.for_run(c), num_classes, input_dim)
  terms = memory_estimate.estimate(program, cost, data, devices, num_runs, lanes, batch, mode,
                                   num_clients)
  host = memory_estimate.check_memory(terms, devices)
  _, device, placed = memory_estimate.peak(terms, devices)
  if data.train_sizes is not None:
    resources.check_steps(program, data.train_sizes, num_runs, lanes, batch)
  if mode == 'per_round':
    resources.check_gathered_rows(program, num_runs * data.cohort_rows)
  largest_bytes, largest = max(placed, key=lambda p: p[0])
  runs = 'the run' if num_runs == 1 else f'{num_runs} runs'
  clamped = f' (client.batch_size = {c.client.batch_size}: no client has more)' if (
      batch < c.client.batch_size) else ''
  programs = [
      f'rounds: {num_runs * k} client jobs a round ({num_runs} x {k} clients) on {lanes} lanes '
      f'({devices.everywhere or devices.count} {devices.platform} devices); a lane step trains '
      f'a batch [{batch}, {input_dim}]{clamped}, up to {e} epoch{"s" if e > 1 else ""} a client',
      f'cohorts: each round\'s clients, stragglers and epochs, for {runs}',
  ]
  if mode == 'per_round':
    programs.append(f'gather: the cohorts\' rows, up to {num_runs * data.cohort_rows:,} a round '
                    '(compute.client_data = per_round)')
  chunk = evaluation.chunk_size(program)
  sampled = 0 < c.eval.clients < num_clients
  if not sampled or c.eval.full_every:
    programs.append(f'evaluation: the models of {runs} on every client\'s data, {chunk:,} examples '
                    'a chunk')
  if sampled:
    programs.append(f'evaluation: the models of {runs} on eval.clients = {c.eval.clients} clients '
                    f'drawn afresh, {chunk:,} examples a chunk')
  steps = sum(_steps_per_run(run, data, batch, num_clients) for run in configs)
  round_s = eval_s = None
  if data.train_rows:
    flops = forward_flops(c)
    parallel = min(lanes, devices.everywhere or devices.count)
    if devices.cpu:
      parallel = min(parallel, os.cpu_count() or 1)
    step_s = STEP_OVERHEAD_S + 3 * batch * flops / STEP_FLOPS_PER_S
    round_s = steps * step_s / max(min(parallel, num_runs * k), 1)
    rows = _evaluated_rows(c, data, num_clients)
    eval_s = max(num_runs * rows * flops / EVAL_FLOPS_PER_S,
                 rows * data.row_bytes / EVAL_BYTES_PER_S)
    if c.eval.dissimilarity:  # Per-example gradients of the training examples: 3 passes.
      eval_s += evaluations(c) * num_runs * 3 * data.train_rows * flops / EVAL_FLOPS_PER_S
  return ProgramPlan(num_runs, lanes, batch, mode, programs, host, device,
                     f'{size_text(largest_bytes)}: {largest.what}', steps, round_s, eval_s)


def _steps_per_run(c: ml_collections.ConfigDict, data: DataPlan, batch: int,
                   num_clients: int) -> float:
  """A run's expected client steps a round: clients_per_round clients of the mean size, each its
  epochs (a straggler's uniform in 1..E-1, none when dropped)."""
  if data.train_sizes is not None and len(data.train_sizes):
    per_epoch = float(np.mean(np.ceil(np.asarray(data.train_sizes) / batch)))
  else:
    per_epoch = math.ceil(data.train_rows / max(num_clients, 1) / batch)
  e, f = c.client.local_epochs, c.stragglers.fraction
  partial = 0.0 if c.algorithm.drop_stragglers else (e / 2 if e > 1 else 1.0)
  return c.clients_per_round * per_epoch * ((1 - f) * e + f * partial)


def evaluations(c: ml_collections.ConfigDict) -> int:
  """How many rounds are evaluated: 0, every eval_every-th and the last (rounds.py)."""
  n, every = c.num_rounds, c.eval_every
  return 1 + n // every + (1 if n % every else 0)


def _evaluated_rows(c: ml_collections.ConfigDict, data: DataPlan, num_clients: int) -> float:
  """Examples read by a run's evaluations, all of them."""
  rows = data.train_rows + data.eval_rows
  total = evaluations(c) * rows
  if 0 < c.eval.clients < num_clients:
    full = c.num_rounds // c.eval.full_every + 1 if c.eval.full_every else 0
    total = full * rows + (evaluations(c) - full) * rows * c.eval.clients / num_clients
  return total


def forward_flops(c: ml_collections.ConfigDict) -> float:
  """The arithmetic of one example's forward pass through the config's model."""
  num_classes, input_dim = tasks.model_dims(c.data)
  return _forward_flops(c.model.name, tuple(sorted(models.options(c.model).items())), num_classes,
                        input_dim)


@functools.lru_cache(maxsize=32)
def _forward_flops(model: str, options: tuple, num_classes: int, input_dim: int) -> float:
  """From the program of a batch of 2 less that of 1 (which cancels the model's initialisation):
  traced only, nothing runs."""

  def forward(key, x):
    apply_fn, params = models.create_model(model, num_classes, input_dim, key, **dict(options))
    return apply_fn(params, x)

  dtype = getattr(models.MODELS[model], 'input_dtype', jnp.float32)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  counts = [
      _flops(jax.make_jaxpr(forward)(key, jax.ShapeDtypeStruct((b, input_dim), dtype)).jaxpr)
      for b in (1, 2)
  ]
  return max(counts[1] - counts[0], 1.0)


def _flops(jaxpr, times: int = 1) -> float:
  """Floating-point operations of a jaxpr: 2 per multiply-add of its products and convolutions,
  1 per element of anything else; loops' bodies counted once per iteration."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  total = 0.0
  for eqn in jaxpr.eqns:
    subs = list(jex_core.jaxprs_in_params(eqn.params))
    for sub in subs:
      total += _flops(sub, times * int(eqn.params.get('length', 1)))
    if subs:
      continue
    out = sum(float(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, 'shape'))
    name = eqn.primitive.name
    if name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2 * out * float(np.prod([lhs[d] for d in contracting])) * times
    elif name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
      total += 2 * out * float(np.prod(rhs)) / out_features * times
    else:
      total += out * times
  return total
