"""Validation's checks of a config against the machine, before its data are loaded and before JAX
starts: the int32 counts and the memory, as far as the task's plan of its data (synthetic and
MNIST: exact) and the devices allow. The Simulation checks again once the data are loaded."""
import ml_collections

from fedprox_jax import tasks
from fedprox_jax.engine import machine
from fedprox_jax.engine import memory_estimate
from fedprox_jax.engine import model_cost
from fedprox_jax.engine import resources
from fedprox_jax.engine.machine import Devices
from fedprox_jax.experiment import settings
from fedprox_jax.tasks import data_plan

# Accelerators: their lanes are chosen from their count, known once JAX starts; one here.
ONE_ACCELERATOR = Devices(1, False, 0, 'accelerator')


def check_config(c: ml_collections.ConfigDict, num_runs: int = 1) -> None:
  """Refuses a config whose counts pass int32 or whose runs would not fit the machine."""
  program = settings.for_program(c)
  data = tasks.plan(c.data, c.clients_per_round) or data_plan.NO_DATA
  batch = resources.batch_size(c.client.batch_size, data.largest)
  resources.check_rows(program, data, batch)
  devices = machine.devices_planned(c.compute.cpu_devices)
  lanes = resources.num_lanes(c.compute.num_lanes, num_runs * c.clients_per_round, devices or
                              ONE_ACCELERATOR)
  num_classes, input_dim = tasks.model_dims(c.data)
  cost = model_cost.for_program(program, settings.for_run(c), num_classes, input_dim)
  num_clients = c.data.get('num_clients', 0)
  if devices is None:  # Only the host's part here; the devices' once JAX has started.
    terms = memory_estimate.estimate(program,
                                     cost,
                                     data,
                                     ONE_ACCELERATOR,
                                     num_runs,
                                     lanes,
                                     batch,
                                     num_clients=num_clients)
    memory_estimate.check_memory([t for t in terms if t.place in ('load', 'host')],
                                 Devices(1, False, 2**62, 'accelerator'))
  else:
    terms = memory_estimate.estimate(program,
                                     cost,
                                     data,
                                     devices,
                                     num_runs,
                                     lanes,
                                     batch,
                                     num_clients=num_clients)
    memory_estimate.check_memory(terms, devices)
  if data.train_sizes is not None:
    resources.check_steps(program, data.train_sizes, num_runs, lanes, batch)


def name(setting: str) -> str:
  """How the engine's messages name a setting: its config field."""
  return dict(settings.NAMES).get(setting, setting)
