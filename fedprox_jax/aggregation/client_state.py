"""Every client's state of the stages that keep one (error feedback's residual), kept with the
algorithm's own client state in the engine's client-state store (engine/client_states.py): on the
device or on the host, gathered for the cohort before a round, written back after it, in the
checkpoints, and counted against memory before any compute, like SCAFFOLD's c_i.

The program then runs the algorithm as `with_client_state` makes it: its client state is
{'algorithm': the algorithm's own ({} where it keeps none), 'stages': {stage: state}}, and each of
its functions still sees its own part alone. The stages' part changes only in the lanes, where the
client sides of the stages run (core/lanes.py).
"""
import jax

from fedprox_jax import aggregation
from fedprox_jax.algorithms.base import Algorithm


def with_client_state(algorithm: Algorithm, stages, upload_shape) -> Algorithm:
  """The algorithm whose client state holds the stages' too; itself where no stage keeps one.
  `upload_shape`: the shapes of one client's upload (what the residual is shaped like)."""
  if not aggregation.keeps_client_state(stages):
    return algorithm
  own = algorithm.init_client_state
  mine = (lambda cs: cs['algorithm']) if own else (lambda cs: None)

  def init_client_state(params):
    return {
        'algorithm': own(params) if own else {},
        'stages': aggregation.init_client_states(stages, upload_shape)
    }

  def upload(result, state, client_state, hp):
    sent, new_own = algorithm.upload(result, state, mine(client_state), hp)
    return sent, {'algorithm': new_own if own else {}, 'stages': client_state['stages']}

  def in_context(f):
    return f and (lambda model, params, batch, context: f(
        model, params, batch, context._replace(client_state=mine(context.client_state))))

  def after_send(sent, client_state, new_client_state, hp):
    own_after = algorithm.after_send(sent, mine(client_state), new_client_state['algorithm'], hp)
    return {**new_client_state, 'algorithm': own_after}

  correction = algorithm.correction
  return algorithm._replace(after_send=algorithm.after_send and after_send,
                            init_client_state=init_client_state,
                            upload=upload,
                            correction=correction and
                            (lambda state, cs, hp: correction(state, mine(cs), hp)),
                            local_loss=in_context(algorithm.local_loss),
                            before_steps=in_context(algorithm.before_steps))


def bytes_per_client(stages, upload_shape) -> int:
  """Bytes of one client's state of the stages (0 where none keeps one)."""
  one = jax.eval_shape(lambda: aggregation.init_client_states(stages, upload_shape))
  return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(one))
