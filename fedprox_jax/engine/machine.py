"""What the machine offers a run: its memory (a container's limit included), its devices as far as
memory goes (known before JAX starts where they are the CPU's), and sizes and counts in words for
the messages that refuse a run.
"""
from collections.abc import Callable
import importlib.metadata
import importlib.util
import os
from typing import NamedTuple

import jax

from fedprox_jax.errors import ConfigError


def machine_memory() -> int:
  """Bytes of memory this process can have: the machine's, or its container's limit if lower."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for path in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      total = min(total, int(text))
  return total


def size_text(n: float) -> str:
  """Bytes for a message, in MiB, GiB or TiB."""
  if n >= 2**40:
    return f'{n / 2**40:,.1f} TiB'
  if n >= 2**30:
    return f'{n / 2**30:.1f} GiB'
  return f'{n / 2**20:.1f} MiB'


def gib_text(n: float) -> str:
  return f'{n / 2**30:.1f} GiB'


def check_fits(needed: float,
               budget: float,
               message: str,
               sizes: Callable[[float], str] = size_text) -> None:
  """Refuses (ConfigError) `needed` bytes over `budget`; `message` is the line, with {needed} and
  {budget} filled in as `sizes` writes them."""
  if needed > budget:
    raise ConfigError(message.format(needed=sizes(needed), budget=sizes(budget)))


def count_text(n: int, thing: str) -> str:
  """`n` things in words: '1 lane', '2 lanes'."""
  return f'{n:,} {thing}{"" if n == 1 else "s"}'


class Devices(NamedTuple):
  """The devices a process runs on, as far as memory goes."""
  count: int  # In this process.
  cpu: bool  # The CPU's devices, which share the machine's memory.
  memory: int  # Bytes of each device (the machine's for CPU devices).
  platform: str
  everywhere: int = 0  # In all processes of the run (the lanes are shared out over them); 0: count.


def _started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False  # Cannot tell: the config's devices, rather than start JAX too early.


def _accelerator_expected() -> bool:
  """Whether JAX will run on an accelerator, known without starting it (which would fix the CPU's
  device count before compute.cpu_devices is applied)."""
  platforms = (jax.config.jax_platforms or '').split(',')[0].strip()
  if platforms:
    return platforms != 'cpu'
  plugins = importlib.metadata.entry_points(group='jax_plugins')
  return bool(plugins) or any(
      importlib.util.find_spec(name) is not None for name in ('jax_plugins', 'libtpu'))


def devices_now() -> Devices:
  """The process's devices (JAX starts, if it had not)."""
  local = jax.local_devices()
  cpu = local[0].platform == 'cpu'
  limit = None
  if not cpu:
    limit = (local[0].memory_stats() or {}).get('bytes_limit')
  return Devices(len(local), cpu, int(limit or machine_memory()), local[0].platform,
                 jax.device_count())


def devices_planned(cpu_devices: int) -> Devices | None:
  """The devices a run will have, known before JAX starts (`cpu_devices`: the CPU devices asked
  for, 0 = one per core); None when they will be accelerators (their memory is known once JAX
  starts: the Simulation checks it then)."""
  if _started():
    return devices_now()
  if _accelerator_expected():
    return None
  return Devices(cpu_devices or os.cpu_count() or 1, True, machine_memory(), 'cpu')
