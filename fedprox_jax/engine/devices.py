"""Which devices a simulation uses; called before JAX runs anything."""
import ipaddress
import os
import socket
from typing import NamedTuple

from absl import logging
import jax

from fedprox_jax.errors import ConfigError


class ComputeSettings(NamedTuple):
  """The process's own settings (the config's `compute` group): its CPU devices and persistent
  compilation cache, and in a run of several processes how it joins the others."""
  distributed: bool = False  # Join a multi-process run (jax.distributed) first.
  coordinator_address: str = ''  # host:port of process 0; '' = from the cluster.
  num_processes: int = 0  # 0 = from the cluster's environment.
  process_id: int = -1  # -1 = from the cluster's environment.
  join_timeout_s: int = 300
  heartbeat_timeout_s: float = 30
  cpu_devices: int = 0  # CPU devices to split the CPU into; 0 = one per core.
  compilation_cache_dir: str = ''  # '' = off.


def _loopback_bind(address: str | None) -> str | None:
  """Where the coordinator listens: on the loopback interface alone when its address is loopback
  (one machine; nothing else can reach it), else JAX's choice (every interface, for other hosts)."""
  if not address or ':' not in address:
    return None
  host, port = address.rsplit(':', 1)
  try:
    loopback = ipaddress.ip_address(host.strip('[]')).is_loopback
  except ValueError:
    loopback = host == 'localhost'
  if not loopback:
    return None
  return f'{"127.0.0.1" if host == "localhost" else host}:{port}'


def _check_port(bind: str) -> None:
  """The coordinator's port must be free (or held for it by the launcher, which binds it with
  SO_REUSEPORT as the coordinator does, so that no other program takes it meanwhile)."""
  host, port = bind.rsplit(':', 1)
  host = host.strip('[]')
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  problem = None
  with socket.socket(family) as s:
    if hasattr(socket, 'SO_REUSEPORT'):
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
      s.bind((host, int(port)))
    except OSError as e:
      problem = e.strerror
  if problem is None:  # Free, or shared (SO_REUSEPORT) with a listener of this user: is there one?
    with socket.socket(family) as s:
      s.settimeout(1.0)
      problem = 'a program listens on it' if s.connect_ex((host, int(port))) == 0 else None
  if problem:
    raise ConfigError(
        f'the coordinator\'s address {bind} cannot be taken ({problem}): another program uses '
        'that port; give compute.coordinator_address another port (fedprox_jax.launch picks a '
        'free one)')


def join(compute: ComputeSettings) -> None:
  """Joins the processes of a multi-process run (JAX's multi-controller engine): every process
  runs the same program on its own devices, and together they see all devices. Unset fields come
  from the cluster's environment (SLURM, Cloud TPU) as JAX detects it. A loopback coordinator
  address keeps the coordinator on the loopback interface."""
  if jax.distributed.is_initialized():
    return
  # Cross-process collectives of CPU devices go through gloo (accelerators have their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  address = compute.coordinator_address or None
  process_id = None if compute.process_id < 0 else compute.process_id
  bind = _loopback_bind(address)
  if bind and process_id == 0:
    _check_port(bind)
  jax.distributed.initialize(
      coordinator_address=address,
      num_processes=compute.num_processes or None,
      process_id=process_id,
      initialization_timeout=compute.join_timeout_s,
      coordinator_bind_address=bind,
      # The processes watch each other's heartbeats themselves (engine/heartbeats.py) and stop
      # with one line after compute.heartbeat_timeout_s; JAX's own watch, which aborts the
      # process with a C++ dump, is the backstop.
      heartbeat_timeout_seconds=int(2 * compute.heartbeat_timeout_s + 30))


# Whether a command line owns this process (then the process-wide settings of `compute` apply).
_OWNED = [False]
_NOTED = [False]


def own_process() -> None:
  """Called by the command lines, which own their process: configure() then applies the settings
  of `compute` that hold for the whole process (JAX's CPU device count and its persistent
  compilation cache). A library call (train_and_evaluate in a notebook) leaves the process as it
  found it; fedprox_jax.experiment.configure_process(config) applies them there on request."""
  _OWNED[0] = True


def apply_process_settings(compute: ComputeSettings) -> None:
  """Splits the CPU into `compute.cpu_devices` devices and turns on JAX's persistent compilation
  cache in `compute.compilation_cache_dir`, for every later computation of this process.

  Lanes are sharded over all devices; on a CPU-only machine, several CPU devices run their lanes
  on separate cores. This must happen before JAX's first computation; later it is only reported.
  """
  if compute.compilation_cache_dir:
    # JAX's persistent compilation cache: a repeated run loads its compiled programs instead of
    # compiling them (seconds faster, and without the compiler's memory).
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(compute.compilation_cache_dir))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  wanted = compute.cpu_devices or os.cpu_count() or 1
  try:
    jax.config.update('jax_num_cpu_devices', wanted)
  except RuntimeError:  # JAX already started (a notebook, a test): keep its devices.
    if jax.devices()[0].platform == 'cpu' and jax.local_device_count() != wanted:
      logging.warning('JAX already runs with %d CPU devices; compute.cpu_devices=%d ignored',
                      jax.device_count(), wanted)


def _note_unapplied(compute: ComputeSettings) -> None:
  """Says once, in a library call, which process-wide settings of `compute` were left as found."""
  if _NOTED[0]:
    return
  unapplied = []
  wanted = compute.cpu_devices or os.cpu_count() or 1
  if jax.devices()[0].platform == 'cpu' and jax.local_device_count() != wanted:
    unapplied.append(f'compute.cpu_devices={compute.cpu_devices} (JAX has '
                     f'{jax.local_device_count()} CPU devices)')
  cache = compute.compilation_cache_dir
  if cache and jax.config.jax_compilation_cache_dir != os.path.expanduser(cache):
    unapplied.append(f'compute.compilation_cache_dir={cache!r}')
  if unapplied:
    _NOTED[0] = True
    logging.info(
        '%s: settings of the whole process, which a library call leaves as it found them; '
        'call fedprox_jax.experiment.configure_process(config) before JAX starts to apply them',
        ' and '.join(unapplied))


def configure(compute: ComputeSettings) -> None:
  """Joins a multi-host job if asked; applies the process-wide settings of `compute` when a
  command line owns the process (own_process), else says which were left as found."""
  if compute.distributed:
    join(compute)
  if _OWNED[0]:
    apply_process_settings(compute)
  else:
    _note_unapplied(compute)
