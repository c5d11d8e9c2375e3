"""What a program's model costs in memory: one model's parameters, the values an example's forward
pass makes, a client's upload, the per-client state (the algorithm's and its aggregation stages')
and a run's server state; from shapes alone (nothing runs, so JAX's devices can still be
configured afterwards).
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax.aggregation import client_state as stage_client_state
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.engine.run_settings import RunSettings
from fedprox_jax.tasks import models


def _intermediate_bytes(jaxpr, times: int = 1, per_iteration: bool = True) -> int:
  """Bytes of every value a jaxpr makes, loops' bodies counted once per iteration (what a step
  keeps for its backward pass), or only once (`per_iteration` False: a forward pass alone, whose
  loop bodies reuse their memory from one iteration to the next; the loops' stacked outputs are
  counted whole either way)."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  total = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      aval = var.aval
      if hasattr(aval, 'shape'):
        total += int(np.prod(aval.shape)) * aval.dtype.itemsize * times
    for sub in jex_core.jaxprs_in_params(eqn.params):
      length = int(eqn.params.get('length', 1)) if per_iteration else 1
      total += _intermediate_bytes(sub, times * length, per_iteration)
  return total


def _nbytes(tree) -> int:
  return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


class ModelCost(NamedTuple):
  param_bytes: int  # One model.
  example_bytes: int  # Values one example's forward pass makes (a step keeps about as much).
  eval_example_bytes: int  # What one example's forward pass alone holds (loop bodies once).
  upload_bytes: int  # What a client uploads.
  client_state_bytes: int  # What the algorithm and the stages keep for a client (0: nothing).
  server_bytes: int  # A run's server state.
  upload_shape: object = None  # The shapes of a client's upload (a pytree of ShapeDtypeStruct).


@functools.lru_cache(maxsize=64)
def _model_cost(model: str,
                options: tuple,
                num_classes: int,
                input_dim: int,
                algorithm: str,
                optimizer: str,
                hp_names: tuple,
                fixed: tuple,
                stages: tuple = ()) -> ModelCost:
  """From shapes alone (everything traced inside eval_shape and make_jaxpr): nothing runs, so
  JAX's devices can still be configured after this."""
  from fedprox_jax.algorithms import server_optimizers  # pylint: disable=g-import-not-at-top
  from fedprox_jax.algorithms.base import Batch  # pylint: disable=g-import-not-at-top
  from fedprox_jax.algorithms.base import ClientResult  # pylint: disable=g-import-not-at-top
  from fedprox_jax.algorithms.base import LocalContext  # pylint: disable=g-import-not-at-top
  cls = models.MODELS[model]
  module = cls(num_classes=num_classes, **dict(options))  # (Checked: models.check_options.)
  dtype = getattr(cls, 'input_dtype', jnp.float32)
  params = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, input_dim), dtype))['params'],
                          jax.ShapeDtypeStruct((2,), jnp.uint32))
  jaxprs = [
      jax.make_jaxpr(lambda p, x: module.apply({'params': p}, x))(params,
                                                                  jax.ShapeDtypeStruct(
                                                                      (b, input_dim), dtype)).jaxpr
      for b in (1, 2)
  ]
  forward = [_intermediate_bytes(j) for j in jaxprs]
  forward_alone = [_intermediate_bytes(j, per_iteration=False) for j in jaxprs]
  alg = algorithms.get(algorithm).with_fixed(dict(fixed))

  def states(p, hp, steps):
    client_state = alg.init_client_state(p) if alg.init_client_state is not None else None
    state = alg.init_state(p, hp)
    before = None
    if alg.before_steps is not None:
      apply_fn = models.create_model(model, num_classes, input_dim, jax.random.PRNGKey(0),
                                     **dict(options))[0]
      batch = Batch(jnp.zeros((1, input_dim), dtype), jnp.zeros(1, jnp.int32), jnp.ones(1))
      before = alg.before_steps(apply_fn.outputs, p, batch,
                                LocalContext(p, state, client_state, hp))
    result = ClientResult(p, steps, hp['learning_rate'], hp['weight_decay'], hp['mu'], p, before)
    upload = alg.upload(result, state, client_state, hp)[0]
    return client_state, state, upload, server_optimizers.make(optimizer, hp).init(p)

  hp = {name: jax.ShapeDtypeStruct((), dtype) for name, dtype in hp_names}
  client_state, state, upload, server = jax.eval_shape(states, params, hp,
                                                       jax.ShapeDtypeStruct((), jnp.int32))
  stage_bytes = stage_client_state.bytes_per_client(aggregation.chain(stages), upload)
  return ModelCost(param_bytes=_nbytes(params),
                   example_bytes=max(forward[1] - forward[0], 0),
                   eval_example_bytes=max(forward_alone[1] - forward_alone[0], 0),
                   upload_bytes=_nbytes(upload),
                   client_state_bytes=stage_bytes +
                   (_nbytes(client_state) if client_state is not None else 0),
                   server_bytes=_nbytes(params) + _nbytes(server) + _nbytes(state),
                   upload_shape=upload)


def for_program(program: ProgramSettings, run: RunSettings, num_classes: int,
                input_dim: int) -> ModelCost:
  """The cost of the program's model, algorithm and server optimizer, for examples of
  `input_dim` features and `num_classes` classes (`run`: the kinds of its hyperparameters)."""
  hp_names = tuple(sorted((k, np.asarray(v).dtype.name) for k, v in run.hp.items()))
  return _model_cost(program.model, program.model_options, num_classes, input_dim,
                     program.algorithm, program.server_optimizer, hp_names,
                     tuple(sorted(run.fixed.items())), tuple(program.aggregation))
