"""What the core sees of a model: a function of (params, examples) whose outputs are the logits
and, where the model declares one, its representation of each example (MOON contrasts them).

Tasks build these (tasks/models.py); the core never names a model.
"""
from collections.abc import Callable
import dataclasses
from typing import Any
from typing import NamedTuple

import jax


class Outputs(NamedTuple):
  logits: jax.Array  # [batch, classes]
  representation: jax.Array | None = None  # [batch, features]; None: the model declares none


@dataclasses.dataclass(frozen=True, eq=False)
class ApplyFn:
  """A model as a function: `apply(params, x)` gives the logits, `apply.outputs(params, x)` the
  logits and the representation (XLA drops whatever a caller does not use)."""
  outputs: Callable[[Any, jax.Array], Outputs]
  has_representation: bool = False

  def __call__(self, params, x: jax.Array) -> jax.Array:
    return self.outputs(params, x).logits

  def on_inputs(self, transform: Callable[[jax.Array], jax.Array]) -> 'ApplyFn':
    """The same model reading transform(x) (normalised pixels, gathered windows, ...)."""
    return ApplyFn(lambda p, x: self.outputs(p, transform(x)), self.has_representation)


def outputs_of(apply_fn) -> Callable[[Any, jax.Array], Outputs]:
  """apply_fn's outputs: an ApplyFn's own, or a plain logits function's logits alone."""
  if isinstance(apply_fn, ApplyFn):
    return apply_fn.outputs
  return lambda p, x: Outputs(apply_fn(p, x))
