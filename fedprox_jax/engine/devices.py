"""Which devices a simulation uses; called before JAX runs anything."""
import os

from absl import logging
import jax
import ml_collections


def join(compute: ml_collections.ConfigDict) -> None:
  """Joins the processes of a multi-process run (JAX's multi-controller engine): every process
  runs the same program on its own devices, and together they see all devices. Unset fields come
  from the cluster's environment (SLURM, Cloud TPU) as JAX detects it."""
  if jax.distributed.is_initialized():
    return
  # Cross-process collectives of CPU devices go through gloo (accelerators have their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=compute.coordinator_address or None,
      num_processes=compute.num_processes or None,
      process_id=None if compute.process_id < 0 else compute.process_id,
      initialization_timeout=compute.join_timeout_s,
      # A process that stops sending heartbeats (killed, its host down) stops the others: within
      # this time, not JAX's default 100 s.
      heartbeat_timeout_seconds=compute.heartbeat_timeout_s)


def configure(c: ml_collections.ConfigDict) -> None:
  """Joins a multi-host job if asked, and splits the CPU into `compute.cpu_devices` devices.

  Lanes are sharded over all devices; on a CPU-only machine, several CPU devices run their lanes
  on separate cores. This must happen before JAX's first computation; later it is only reported.
  """
  if c.compute.distributed:
    join(c.compute)
  if c.compute.compilation_cache_dir:
    # JAX's persistent compilation cache: a repeated run loads its compiled programs instead of
    # compiling them (seconds faster, and without the compiler's memory).
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(c.compute.compilation_cache_dir))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  wanted = c.compute.cpu_devices or os.cpu_count() or 1
  try:
    jax.config.update('jax_num_cpu_devices', wanted)
  except RuntimeError:  # JAX already started (a notebook, a test): keep its devices.
    if jax.devices()[0].platform == 'cpu' and jax.local_device_count() != wanted:
      logging.warning('JAX already runs with %d CPU devices; compute.cpu_devices=%d ignored',
                      jax.device_count(), wanted)
