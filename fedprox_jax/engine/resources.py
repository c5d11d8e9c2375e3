"""The limits a run is held to before compute, and its refusals in one line.

Memory: validation estimates, before the data are loaded and before JAX starts, what a run of a
config holds (experiment/preflight.py: engine/memory_estimate.py from the task's plan of the data)
and refuses one over the machine's memory; the Simulation checks again once the data are loaded.
An allocation that fails anyway is answered in one line (out_of_memory, memory_errors). Messages
name settings as the ProgramSettings' `name` does (the config's fields, from the experiment layer).

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
import numpy as np

from fedprox_jax.engine import machine
from fedprox_jax.engine.machine import Devices
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.errors import ConfigError
from fedprox_jax.tasks.data_plan import DataPlan

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


# --- Counts in int32.


def check_rows(program: ProgramSettings, data: DataPlan, batch: int) -> None:
  """Rows are indexed in int32 on the device, and a client's batch reads positions up to its
  examples + batch - 1."""
  if data.train_rows > INT32_MAX or data.largest + batch - 1 > INT32_MAX:
    raise ConfigError(f'{program.name("data")} gives {data.train_rows:,} training examples '
                      f'({data.described}), more than 2^31 - 1, the most this simulator indexes: '
                      f'{data.fix}')


def check_steps(program: ProgramSettings, train_sizes: np.ndarray, num_runs: int, lanes: int,
                batch: int) -> None:
  """Refuses local steps that the device's int32 counts would overflow: a client's steps
  (local_epochs x batches), a lane's load, a round's real steps and its steps over all lanes
  (executed_steps). A round of R cohorts of K clients runs at most R times the K largest clients'
  steps; greedy packing onto L lanes loads the busiest lane with at most total / L + the largest
  job, so the lanes execute at most total + L x the largest job."""
  sizes = np.asarray(train_sizes, np.int64)
  if not len(sizes):
    return
  p, n = program, program.name
  e = p.local_epochs
  steps = e * -(-sizes // batch)  # int64: below 2^31 x 2^31.
  k = min(p.clients_per_round, len(sizes))
  largest = int(steps.max())
  real = num_runs * int(np.sort(steps)[len(steps) - k:].sum())
  if real + lanes * largest <= INT32_MAX:
    return
  job = (f'the largest client, {int(sizes.max()):,} training examples, takes {largest:,} with '
         f'{n("local_epochs")} = {e:,} and {n("batch_size")} = {p.batch_size:,}')
  if real <= INT32_MAX and lanes * largest > real:  # Mostly idle lanes' steps.
    raise ConfigError(
        f'{n("num_lanes")} = {lanes:,} lanes would execute up to '
        f'{real + lanes * largest:,} lane steps a round ({job}), more than 2^31 - 1 = '
        f'{INT32_MAX:,}, the most the device counts: lower {n("num_lanes")} (0 chooses)')
  raise ConfigError(f'{n("local_epochs")} = {e:,} makes rounds of up to {real + lanes * largest:,} '
                    f'local steps ({job}; {machine.count_text(num_runs * k, "client job")} on '
                    f'{machine.count_text(lanes, "lane")}), '
                    f'more than 2^31 - 1 = {INT32_MAX:,}, the most the device counts: lower '
                    f'{n("local_epochs")} or {n("clients_per_round")}, or raise {n("batch_size")}')


def check_gathered_rows(program: ProgramSettings, num_rows: int) -> None:
  """The rows a round gathers (client_data=per_round) are counted in int32."""
  n = program.name
  if num_rows > INT32_MAX:
    raise ConfigError(f'a round would gather up to {num_rows:,} rows, more than 2^31 - 1: lower '
                      f'{n("clients_per_round")} or the runs per program, or set '
                      f'{n("client_data")}=replicated')


# --- Running out of memory anyway.


def out_of_memory(e: BaseException,
                  estimate_bytes: float | None = None,
                  name: Callable[[str], str] = str) -> ConfigError | None:
  """A ConfigError in one line for an allocation that failed (NumPy's MemoryError and its
  _ArrayMemoryError, XLA's RESOURCE_EXHAUSTED), else None: what a command line prints in place of
  the traceback. `name` names a setting (ProgramSettings.name)."""
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
      f'or smaller clients, fewer lanes ({name("num_lanes")}), a smaller {name("batch_size")} or '
      f'{name("eval_chunk")}, or fewer {name("cpu_devices")}')


@contextlib.contextmanager
def memory_errors(estimate_bytes: Callable[[], float | None] | None = None,
                  name: Callable[[str], str] = str):
  """Turns a failed allocation inside into out_of_memory's ConfigError, with the estimate that
  `estimate_bytes()` then gives."""
  try:
    yield
  except (MemoryError, jax.errors.JaxRuntimeError) as e:
    error = out_of_memory(e, estimate_bytes() if estimate_bytes else None, name)
    if error is None:
      raise
    raise error from None
