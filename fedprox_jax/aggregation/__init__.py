"""The aggregation pipeline: the stages between a client's upload and the server's Delta_t, each
a module here that defines STAGE (base.Stage), chained in their `order`.

A program runs the stages its config turns on (ProgramSettings.aggregation, their names); every
function here is traced into the round program, per run.
"""
import jax

from fedprox_jax import registry
from fedprox_jax.aggregation.base import Aggregate
from fedprox_jax.aggregation.base import Stage

STAGES = registry.discover(__name__, __path__, 'STAGE', Stage)


def chain(names) -> tuple[Stage, ...]:
  """The stages of these names, in their order."""
  unknown = sorted(set(names) - set(STAGES))
  if unknown:
    raise ValueError(f'no aggregation stage named {unknown[0]!r}: one of {sorted(STAGES)}')
  return tuple(sorted((STAGES[n] for n in names), key=lambda s: s.order))


def active(values: dict) -> tuple[str, ...]:
  """The names of the stages that config field values ({field: value}) turn on, in order."""
  return tuple(s.name for s in chain(STAGES) if s.active(values))


def fields() -> dict:
  """Every stage's config field -> hp key."""
  return {f: k for s in STAGES.values() for f, k in s.fields.items()}


def init_states(stages: tuple[Stage, ...], hp: dict) -> dict:
  """{stage name: its server state} of one run, for the stages that keep one."""
  states = {s.name: s.init_state(hp) for s in stages}
  return {name: state for name, state in states.items() if jax.tree.leaves(state)}


def client(stages: tuple[Stage, ...], upload, states: dict, hp: dict, key, client_states=None):
  """A client's upload through the client sides: (upload, {extra: scalar}, new client states).

  `key` is the client's own key of the round; `client_states` {stage: state} holds the client's
  state of each stage that keeps one (None where none does)."""
  extras, new_states = {}, dict(client_states or {})
  for i, s in enumerate(stages):
    if s.client:
      upload, more, own = s.client(upload, states.get(s.name, {}), hp, jax.random.fold_in(key, i),
                                   new_states.get(s.name))
      extras.update(more)
      if s.name in new_states:
        new_states[s.name] = own
  return upload, extras, (new_states if client_states is not None else None)


def keeps_client_state(stages: tuple[Stage, ...]) -> bool:
  """Whether a stage of the chain keeps a state for every client (error feedback's residual)."""
  return any(s.init_client_state for s in stages)


def init_client_states(stages: tuple[Stage, ...], upload_shape) -> dict:
  """{stage: one client's initial state}, for the stages that keep one."""
  return {s.name: s.init_client_state(upload_shape) for s in stages if s.init_client_state}


def server(stages: tuple[Stage, ...], aggregate: Aggregate, states: dict, hp: dict, key):
  """A run's round through the server sides: (aggregate, new states, {stat: scalar})."""
  states, stats = dict(states), {}
  for i, s in enumerate(stages):
    if s.server:
      aggregate, state, more = s.server(aggregate, states.get(s.name, {}), hp,
                                        jax.random.fold_in(key, i))
      if s.name in states:
        states[s.name] = state
      stats.update(more)
  return aggregate, states, stats
