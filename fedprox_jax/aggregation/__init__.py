"""The aggregation pipeline: the stages between a client's upload and the server's Delta_t, each
a module here that defines STAGE (base.Stage), chained in their `order`.

A program runs the stages its config turns on (ProgramSettings.aggregation, their names); every
function here is traced into the round program, per run.
"""
import jax
import jax.numpy as jnp

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


def client(stages: tuple[Stage, ...], upload, states: dict, hp: dict):
  """A client's upload through the client sides: (upload, {extra: scalar})."""
  extras = {}
  for s in stages:
    if s.client:
      upload, more = s.client(upload, states.get(s.name, {}), hp)
      extras.update(more)
  return upload, extras


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


def extras_shape(stages: tuple[Stage, ...], upload_shape, states: dict, hp: dict) -> dict:
  """The extras' shapes (for the lanes' sums), from the upload's."""
  return jax.eval_shape(lambda u: client(stages, u, states, hp)[1],
                        jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), upload_shape))
