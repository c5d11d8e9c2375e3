"""The limits a run is held to before compute, and its refusals in one line.

Memory: check_config estimates, before the data are loaded and before JAX starts, what a run of a
config holds (engine/memory_estimate.py, from engine/data_plan.py's plan of the data) and refuses
one over the machine's memory; the Simulation checks again once the data are loaded. An allocation
that fails anyway is answered in one line (out_of_memory, memory_errors).

Counts. The device counts local steps, lane loads and rows in int32: a run whose counts could pass
2^31 - 1 is refused (check_rows, check_steps, check_gathered_rows); totals over rounds are summed
on the host, in Python ints.

A batch larger than every client is clamped to the largest client (batch_size): every client's
epoch is then one full batch, as it was, without padding to a size that no client has.
"""
from collections.abc import Callable
import contextlib
import os
import re
import types

import jax
import ml_collections
import numpy as np

from fedprox_jax.engine import data_plan
from fedprox_jax.engine import machine
from fedprox_jax.engine import memory_estimate
from fedprox_jax.engine.data_plan import DataPlan
from fedprox_jax.engine.machine import Devices
from fedprox_jax.errors import ConfigError

INT32_MAX = 2**31 - 1
# CPU devices a process may split the CPU into (compute.cpu_devices), or its cores if more. Each
# runs its lanes on threads of its own and, with replicated client data, holds a copy of the data
# (the devices share the machine's memory); a device more than the cores buys no speed, and 256
# covers the cores of the largest common two-socket machines.
MAX_CPU_DEVICES = max(256, os.cpu_count() or 1)


def batch_size(requested: int, largest: int) -> int:
  """The batch the lanes hold: client.batch_size, or the largest client's training examples when
  every client has fewer (each epoch is one full batch either way)."""
  return max(1, min(requested, largest)) if largest else requested


def num_lanes(requested: int, num_jobs: int, devices: Devices) -> int:
  """placement.choose_num_lanes for devices that JAX has not started."""
  from fedprox_jax.engine import placement  # pylint: disable=g-import-not-at-top
  return placement.choose_num_lanes(
      requested, num_jobs, [types.SimpleNamespace(platform=devices.platform)] * devices.count)


def check_config(c: ml_collections.ConfigDict, num_runs: int = 1) -> None:
  """Validation's checks, before the data are loaded and before JAX starts: the int32 counts and
  the memory, as far as the data's plan (synthetic and MNIST: exact) and the devices allow."""
  data = data_plan.planned_data(c) or data_plan.NO_DATA
  batch = batch_size(c.client.batch_size, data.largest)
  check_rows(data, batch)
  devices = machine.devices_planned(c)
  # Accelerators: their lanes are chosen from their count, known once JAX starts; one here.
  lanes = num_lanes(c.compute.num_lanes, num_runs * c.clients_per_round, devices or
                    Devices(1, False, 0, 'accelerator'))
  if devices is None:  # Only the host's part here; the devices' once JAX has started.
    terms = memory_estimate.estimate(c, data, Devices(1, False, 0, 'accelerator'), num_runs, lanes,
                                     batch)
    memory_estimate.check_memory([t for t in terms if t.place in ('load', 'host')],
                                 Devices(1, False, 2**62, 'accelerator'))
  else:
    terms = memory_estimate.estimate(c, data, devices, num_runs, lanes, batch)
    memory_estimate.check_memory(terms, devices)
  if data.train_sizes is not None:
    check_steps(c, data.train_sizes, num_runs, lanes, batch)


# --- Counts in int32.


def check_rows(data: DataPlan, batch: int) -> None:
  """Rows are indexed in int32 on the device, and a client's batch reads positions up to its
  examples + batch - 1."""
  if data.train_rows > INT32_MAX or data.largest + batch - 1 > INT32_MAX:
    raise ConfigError(f'config.data gives {data.train_rows:,} training examples '
                      f'({data.described}), more than 2^31 - 1, the most this simulator indexes: '
                      f'{data.fix}')


def check_steps(c: ml_collections.ConfigDict, train_sizes: np.ndarray, num_runs: int, lanes: int,
                batch: int) -> None:
  """Refuses local steps that the device's int32 counts would overflow: a client's steps
  (local_epochs x batches), a lane's load, a round's real steps and its steps over all lanes
  (executed_steps). A round of R cohorts of K clients runs at most R times the K largest clients'
  steps; greedy packing onto L lanes loads the busiest lane with at most total / L + the largest
  job, so the lanes execute at most total + L x the largest job."""
  sizes = np.asarray(train_sizes, np.int64)
  if not len(sizes):
    return
  e = c.client.local_epochs
  steps = e * -(-sizes // batch)  # int64: below 2^31 x 2^31.
  k = min(c.clients_per_round, len(sizes))
  largest = int(steps.max())
  real = num_runs * int(np.sort(steps)[len(steps) - k:].sum())
  if real + lanes * largest <= INT32_MAX:
    return
  job = (f'the largest client, {int(sizes.max()):,} training examples, takes {largest:,} with '
         f'client.local_epochs = {e:,} and client.batch_size = {c.client.batch_size:,}')
  if real <= INT32_MAX and lanes * largest > real:  # Mostly idle lanes' steps.
    raise ConfigError(
        f'config.compute.num_lanes = {lanes:,} lanes would execute up to '
        f'{real + lanes * largest:,} lane steps a round ({job}), more than 2^31 - 1 = '
        f'{INT32_MAX:,}, the most the device counts: lower compute.num_lanes (0 chooses)')
  raise ConfigError(
      f'config.client.local_epochs = {e:,} makes rounds of up to {real + lanes * largest:,} '
      f'local steps ({job}; {machine.count_text(num_runs * k, "client job")} on '
      f'{machine.count_text(lanes, "lane")}), '
      f'more than 2^31 - 1 = {INT32_MAX:,}, the most the device counts: lower '
      'client.local_epochs or clients_per_round, or raise client.batch_size')


def check_gathered_rows(num_rows: int) -> None:
  """The rows a round gathers (compute.client_data=per_round) are counted in int32."""
  if num_rows > INT32_MAX:
    raise ConfigError(f'a round would gather up to {num_rows:,} rows, more than 2^31 - 1: lower '
                      'clients_per_round or the runs per program, or set '
                      'compute.client_data=replicated')


# --- Running out of memory anyway.


def out_of_memory(e: BaseException, estimate_bytes: float | None = None) -> ConfigError | None:
  """A ConfigError in one line for an allocation that failed (NumPy's MemoryError and its
  _ArrayMemoryError, XLA's RESOURCE_EXHAUSTED), else None: what a command line prints in place of
  the traceback."""
  text = ' '.join(str(e).split())
  if isinstance(e, MemoryError):
    amount = re.search(r'allocate (\S+ \S+) for', text)
  elif isinstance(e, jax.errors.JaxRuntimeError) and 'RESOURCE_EXHAUSTED' in text:
    amount = re.search(r'allocating (\d+) bytes', text)
  else:
    return None
  if amount and amount.group(1).isdigit():
    what = f' allocating {machine.size_text(int(amount.group(1)))}'
  elif amount:
    what = f' allocating {amount.group(1)}'
  else:
    what = f' ({text[:150]})' if text else ''
  needs = (f'the run was estimated to need {machine.size_text(estimate_bytes)} of this machine\'s '
           f'{machine.size_text(machine.machine_memory())}'
           if estimate_bytes else f'this machine has {machine.size_text(machine.machine_memory())}')
  return ConfigError(
      f'ran out of memory{what}: {needs}, which other processes share: free memory, or use fewer '
      'or smaller clients, fewer lanes (compute.num_lanes), a smaller client.batch_size or '
      'eval.chunk_size, or fewer compute.cpu_devices')


@contextlib.contextmanager
def memory_errors(estimate_bytes: Callable[[], float | None] | None = None):
  """Turns a failed allocation inside into out_of_memory's ConfigError, with the estimate that
  `estimate_bytes()` then gives."""
  try:
    yield
  except (MemoryError, jax.errors.JaxRuntimeError) as e:
    error = out_of_memory(e, estimate_bytes() if estimate_bytes else None)
    if error is None:
      raise
    raise error from None
