"""R federated runs that share data, model, algorithm structure and round count, advanced together
one round at a time.

A single run is R = 1; a sweep puts its runs side by side. Everything a run may vary (seed,
hyperparameters, straggler model, FedAvg's dropping) is data, so all runs share one compiled round
program.
"""
import ctypes
import logging

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax.aggregation import client_state as stage_client_state
from fedprox_jax.core import cohort as cohort_lib
from fedprox_jax.engine import client_states
from fedprox_jax.engine import cohort_rows
from fedprox_jax.engine import evaluation
from fedprox_jax.engine import machine
from fedprox_jax.engine import memory_estimate
from fedprox_jax.engine import model_cost
from fedprox_jax.engine import placement
from fedprox_jax.engine import resources
from fedprox_jax.engine import round_program
from fedprox_jax.engine import server as server_lib
from fedprox_jax.engine.client_states import ClientStates
from fedprox_jax.engine.eval_sample import ClientSample
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.engine.run_settings import RunSettings
from fedprox_jax.engine.run_settings import stacked_hp
from fedprox_jax.errors import ConfigError
from fedprox_jax.tasks import data_plan
from fedprox_jax.tasks import models
from fedprox_jax.tasks.federated_data import FederatedData


def _return_freed_memory() -> None:
  """Hands memory that the compiler freed back to the OS (glibc keeps it otherwise)."""
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):  # Not glibc: nothing to do.
    pass


# The aggregation stages' keys of a round: fold_in(the run's round key, round), then this stream
# (the cohort's draws split the round's key instead, so the two never share one).
AGGREGATION_STREAM = 1


def stage_keys(round_index, round_keys):
  """[R] keys of the aggregation stages (noise) for round `round_index`, from the runs' keys."""
  per_round = jax.vmap(jax.random.fold_in, in_axes=(0, None))(round_keys, round_index)
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(per_round, AGGREGATION_STREAM)


class Simulation:
  """Device state and compiled programs for R runs of one program's structure (ProgramSettings).

  It keeps no reference to the host copy of `data`, which the caller may drop once built.
  """

  def __init__(self, program: ProgramSettings, data: FederatedData, runs: list[RunSettings]):
    self.program, self.runs = program, runs
    p = program
    if p.clients_per_round > data.num_clients:
      raise ConfigError(f'{p.name("clients_per_round")} = {p.clients_per_round} exceeds the '
                        f'{data.num_clients} clients of {p.name("data")}')
    self.algorithm = algorithms.get(p.algorithm).with_fixed(runs[0].fixed)
    self.stages = aggregation.chain(p.aggregation)
    self.optimizer = p.server_optimizer
    # A batch larger than every client is the largest client's: each epoch is one full batch
    # either way, without padding every step to a size no client has.
    self.batch_size = resources.batch_size(p.batch_size, int(np.max(data.train_sizes)))
    self.layout = placement.make_layout(p.num_lanes, len(runs) * p.clients_per_round)
    self.num_lanes = self.layout.num_lanes
    self.client_data_mode = cohort_rows.choose(p.client_data, jax.devices(), data.train_sizes,
                                               p.clients_per_round, len(runs))
    self.memory_estimate = self._check_resources(data)  # Refuses before anything is built.
    with resources.memory_errors(lambda: self.memory_estimate, self.program.name):
      self._build(data)

  def _check_resources(self, data: FederatedData) -> float:
    """Refuses counts past int32 and a run over the memory; the estimate of the host's peak."""
    p, num_runs = self.program, len(self.runs)
    plan = data_plan.loaded_data(data, p.clients_per_round,
                                 f'use fewer or smaller clients ({p.name("data")})')
    resources.check_rows(p, plan, self.batch_size)
    self._devices = machine.devices_now()
    cost = self.cost = model_cost.for_program(p, self.runs[0], data.num_classes, data.input_dim)
    self._memory_terms = memory_estimate.estimate(p, cost, plan, self._devices, num_runs,
                                                  self.num_lanes, self.batch_size,
                                                  self.client_data_mode, data.num_clients)
    host = memory_estimate.check_memory(self._memory_terms, self._devices)
    resources.check_steps(p, data.train_sizes, num_runs, self.num_lanes, self.batch_size)
    if self.client_data_mode == 'per_round':
      resources.check_gathered_rows(
          p, cohort_rows.rows_per_round(data.train_sizes, p.clients_per_round, num_runs))
    return host

  def _check_compiled(self) -> None:
    """The estimate again, with the compiled programs' own working memory for the formulas'."""

    def working(*compiled):
      try:
        return max(p.memory_analysis().temp_size_in_bytes for p in compiled if p is not None)
      except (AttributeError, TypeError, ValueError, jax.errors.JaxRuntimeError):
        return None  # A backend without memory analysis: the formulas stand.

    terms = memory_estimate.refine(self._memory_terms, 'round', working(self._round))
    terms = memory_estimate.refine(terms, 'eval', working(self._evaluate_all,
                                                          self._evaluate_sample))
    self.memory_estimate = memory_estimate.check_memory(terms, self._devices)
    logging.info('Memory: about %s at the peak, estimated (this machine has %s)',
                 machine.size_text(self.memory_estimate),
                 machine.size_text(machine.machine_memory()))

  def _build(self, data: FederatedData) -> None:
    p, runs = self.program, self.runs
    keys = [jax.random.split(jax.random.PRNGKey(r.seed)) for r in runs]
    module_params = [
        models.create_model(p.model, data.num_classes, data.input_dim, k[0],
                            **dict(p.model_options)) for k in keys
    ]
    # Features stay raw on the device (uint8 pixels: a quarter of their float32 size, and a
    # quarter of the bytes that evaluation reads); the model normalises the rows it reads. A
    # sequence task's examples are windows of its text, gathered batch by batch.
    if data.text is not None:
      self.apply_fn = models.on_windows(module_params[0][0], data.text, data.window)
    else:
      self.apply_fn = models.on_raw_features(module_params[0][0], data.feature_mean,
                                             data.feature_scale)
    # Everything a round reads sits on every device with one sharding, so round r's outputs
    # feed round r + 1 without a transfer.
    replicated = self.layout.replicated
    self.hp, self._round_keys = jax.device_put((stacked_hp(runs), jnp.stack([k[1] for k in keys])),
                                               replicated)
    initial_params = placement.stack([p for _, p in module_params])
    self.initial_server = jax.device_put(
        jax.jit(lambda p, h: server_lib.init(self.algorithm, self.optimizer, p, h, self.stages))(
            initial_params, self.hp), replicated)
    # The stages' per-client states (error feedback's residuals) are kept with the algorithm's.
    keeper = client_states.keepers(self.algorithm, self.stages)
    self.algorithm = stage_client_state.with_client_state(self.algorithm, self.stages,
                                                          self.cost.upload_shape)
    self.client_states = (ClientStates(self.algorithm, initial_params, data.num_clients, replicated,
                                       keeper) if self.algorithm.init_client_state else None)
    if self.client_data_mode == 'per_round' and p.client_data == 'auto':
      logging.info(
          'Client data: held once by each process, the cohort\'s rows gathered each '
          'round (%s=per_round; replicated would copy them to each of the %d devices)',
          p.name('client_data'), len(jax.local_devices()))
    self.population_weight = jax.device_put(self._population_weight(data.train_sizes), replicated)
    self._sizes = jax.device_put(data.train_sizes, replicated)  # What cohorts are drawn from.
    self.num_clients = data.num_clients
    self._compile(data)
    self._check_compiled()
    _return_freed_memory()
    self.client_data, self.eval_sets, self._eval_clients = placement.place_data(
        data, self.layout, replicate=self.client_data_mode == 'replicated')

  def _population_weight(self, sizes: np.ndarray) -> np.ndarray:
    """sum_j q_j over every client, per run: exact on the host for the configured weightings,
    the algorithm's own rule's sum in float64 where it has one."""
    weigh = self.algorithm.client_weights
    if weigh is None:
      return round_program.population_weight(sizes, self.batch_size,
                                             stacked_hp(self.runs)['weighting'])
    hp = stacked_hp(self.runs)
    return np.array([
        np.asarray(weigh(jnp.asarray(sizes), self.batch_size, {
            k: v[r] for k, v in hp.items()
        }), np.float64).sum() for r in range(len(self.runs))
    ], np.float32)

  @property
  def initial_params(self):
    return self.initial_server.params

  def _compile(self, data: FederatedData) -> None:
    """The programs, compiled from shapes alone before the data reach the device: the compiler's
    working memory is freed by the time the data take theirs (a lower peak)."""
    p, layout = self.program, self.layout
    weigh = self.algorithm.client_weights
    sample = jax.vmap(
        lambda key, sizes, h: cohort_lib.sample_cohort(key,
                                                       sizes=sizes,
                                                       clients_per_round=p.clients_per_round,
                                                       local_epochs=p.local_epochs,
                                                       batch_size=self.batch_size,
                                                       fraction=h['straggler_fraction'],
                                                       fixed_count=h['fixed_straggler_count'],
                                                       drop_stragglers=h['drop_stragglers'],
                                                       weighting=h['weighting'],
                                                       weigh=weigh and
                                                       (lambda n: weigh(n, self.batch_size, h))),
        in_axes=(0, None, 0))

    def sample_round(round_index, round_keys, hp, sizes):
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(round_keys, round_index)
      return sample(keys, sizes, hp)

    self._sample = jax.jit(sample_round).lower(jnp.int32(0), self._round_keys, self.hp,
                                               self._sizes).compile()
    self._stage_keys = jax.jit(stage_keys).lower(jnp.int32(0), self._round_keys).compile()
    cohort_shape = jax.eval_shape(sample_round, jnp.int32(0), self._round_keys, self.hp,
                                  self._sizes)
    client_shapes = placement.shape_of(placement.host_client_data(data), layout.replicated)
    self._gather = None
    if self.client_data_mode == 'per_round':
      # The rounds see the cohort's rows alone; the gather reads them on the first device.
      local_shapes = placement.shape_of(placement.host_client_data(data), layout.eval_device)
      num_rows = cohort_rows.rows_per_round(data.train_sizes, p.clients_per_round, len(self.runs))
      gather = cohort_rows.make_gather(num_rows)
      self._gather = jax.jit(gather).lower(
          placement.shape_of(cohort_shape.clients, layout.eval_device), local_shapes).compile()
      client_shapes = placement.shape_of(
          jax.eval_shape(gather, cohort_shape.clients, local_shapes)[0], layout.replicated)
    states_shape = (self.client_states.cohort_shape(p.clients_per_round)
                    if self.client_states else None)
    self.traces = 0  # How often the round program was traced: once, whatever the cohorts.
    train_cohort = round_program.make_train_cohort(self.algorithm,
                                                   self.optimizer,
                                                   self.apply_fn,
                                                   batch_size=self.batch_size,
                                                   num_lanes=self.num_lanes,
                                                   max_epochs=p.local_epochs,
                                                   mesh=layout.mesh,
                                                   stages=self.stages)

    def round_fn(*args):
      self.traces += 1
      return train_cohort(*args)

    cohort_placed = placement.shape_of(cohort_shape, layout.replicated)
    if self.client_states and self.client_states.in_round:  # The store goes in, donated.
      self._round = jax.jit(self.client_states.around(round_fn),
                            donate_argnums=3).lower(self.initial_server, self.hp, cohort_placed,
                                                    self.client_states.store_shape(),
                                                    cohort_placed.clients, client_shapes,
                                                    self.population_weight,
                                                    self._round_keys).compile()
    else:
      self._round = jax.jit(round_fn).lower(self.initial_server, self.hp, cohort_placed,
                                            states_shape, client_shapes, self.population_weight,
                                            self._round_keys).compile()
    eval_shapes = placement.shape_of(placement.eval_sets(data), layout.eval_device)
    self._eval_sample = (ClientSample(data, p.eval_clients, p.eval_seed)
                         if 0 < p.eval_clients < data.num_clients else None)
    evaluate = evaluation.make_evaluate(self.apply_fn, evaluation.chunk_size(p), data.num_clients,
                                        p.eval_dissimilarity)
    params_shape = jax.device_put(placement.local_copy(self.initial_params), layout.eval_device)
    clients_shape = placement.client_of_rows_shapes(data, layout.eval_device)
    compile_eval = lambda selections: evaluate.lower(params_shape, eval_shapes, clients_shape,
                                                     selections).compile()
    self._evaluate_all = (compile_eval({}) if not self._eval_sample or p.eval_full_every else None)
    self._evaluate_sample = (compile_eval(self._eval_sample.shapes(layout.eval_device))
                             if self._eval_sample else None)

  def with_hp(self, changes: dict) -> dict:
    """The runs' hyperparameters with some [R] replaced (they are data: no recompile)."""
    placed = {
        k: jax.device_put(np.asarray(v, self.hp[k].dtype), self.layout.replicated)
        for k, v in changes.items()
    }
    return {**self.hp, **placed}

  def sample(self, round_index: int, hp: dict | None = None) -> cohort_lib.Cohort:
    """The cohorts that round `round_index` trains, one per run (what run_round draws)."""
    return self._sample(jnp.int32(round_index), self._round_keys, hp or self.hp, self._sizes)

  def run_round(self, server: server_lib.ServerState, round_index: int, hp: dict | None = None):
    """One round of every run: (new server state [R], stats with [R] entries)."""
    with resources.memory_errors(lambda: self.memory_estimate, self.program.name):
      return self._run_round(server, round_index, hp)

  def _run_round(self, server: server_lib.ServerState, round_index: int, hp: dict | None):
    hp = hp or self.hp
    cohort = self.sample(round_index, hp)
    in_round = self.client_states and self.client_states.in_round
    states = (self.client_states.gather(cohort.clients)
              if self.client_states and not in_round else None)
    round_cohort, round_data = cohort, self.client_data
    if self._gather:
      clients = jax.device_put(placement.local_copy(cohort.clients), self.layout.eval_device)
      # Every process gathered the same rows: each hands its own copy to its devices (a plain
      # device_put onto other processes' devices would check them equal across processes).
      round_data, slots = jax.tree.map(
          lambda a: jax.make_array_from_process_local_data(self.layout.replicated, a, a.shape),
          jax.device_get(self._gather(clients, self.client_data)))
      round_cohort = cohort_rows.for_round(cohort, slots)
    rest = (round_data, self.population_weight,
            self._stage_keys(jnp.int32(round_index), self._round_keys))
    if in_round:  # The program reads and writes the cohort's states itself.
      return self.client_states.run(self._round, cohort.clients, server, hp, round_cohort, *rest)
    server, states, stats = self._round(server, hp, round_cohort, states, *rest)
    if self.client_states:
      self.client_states.scatter(cohort.clients, states)
    return server, stats

  def place_server(self, host_state: server_lib.ServerState) -> server_lib.ServerState:
    """A server state of host arrays (a restored checkpoint) on the rounds' devices."""
    return jax.device_put(host_state, self.layout.replicated)

  def evaluates_all(self, round_index: int) -> bool:
    """Whether the evaluation of `round_index` covers every client (else eval_clients of them):
    always without eval_clients; with it, rounds that are multiples of eval_full_every (a
    schedule of the round alone, so a run extended on resumption records what a longer run
    would)."""
    every = self.program.eval_full_every
    return not self._eval_sample or (every > 0 and round_index % every == 0)

  def evaluate(self, params, round_index: int = 0) -> dict[str, np.ndarray]:
    """Loss and accuracy of every run's global model on each dataset (on the clients drawn for
    `round_index` with eval_clients, and then how many in 'eval/clients'), as [R] arrays."""
    with resources.memory_errors(lambda: self.memory_estimate, self.program.name):
      return self._evaluate(params, round_index)

  def _evaluate(self, params, round_index: int) -> dict[str, np.ndarray]:
    local_params = jax.device_put(placement.local_copy(params), self.layout.eval_device)
    if self.evaluates_all(round_index):
      out = self._evaluate_all(local_params, self.eval_sets, self._eval_clients, {})
    else:
      out = self._evaluate_sample(
          local_params, self.eval_sets, self._eval_clients,
          jax.device_put(self._eval_sample.draw(round_index), self.layout.eval_device))
    out = {k: np.asarray(v) for k, v in out.items()}
    if self.program.eval_clients:
      evaluated = self.num_clients if self.evaluates_all(round_index) else self._eval_sample.k
      out['eval/clients'] = np.full(len(self.runs), evaluated, np.int32)
    return out
