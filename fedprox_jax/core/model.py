"""What the core sees of a model: a function of (params, examples) whose outputs are the logits
and, where the model declares one, its representation of each example (MOON contrasts them).

Tasks build these (tasks/models.py); the core never names a model.
"""
from collections.abc import Callable
import dataclasses
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Outputs(NamedTuple):
  logits: jax.Array  # [batch, classes]
  representation: jax.Array | None = None  # [batch, features]; None: the model declares none


@dataclasses.dataclass(frozen=True, eq=False)
class ApplyFn:
  """A model as a function: `apply(params, x)` gives the logits, `apply.outputs(params, x)` the
  logits and the representation (XLA drops whatever a caller does not use)."""
  outputs: Callable[[Any, jax.Array], Outputs]
  has_representation: bool = False
  # False where vmapping the model over parameters is slow (a convolution becomes a grouped one):
  # over_params then runs the parameter sets one after another.
  vmaps_over_params: bool = True

  def __call__(self, params, x: jax.Array) -> jax.Array:
    return self.outputs(params, x).logits

  def on_inputs(self, transform: Callable[[jax.Array], jax.Array]) -> 'ApplyFn':
    """The same model reading transform(x) (normalised pixels, gathered windows, ...)."""
    return dataclasses.replace(self, outputs=lambda p, x: self.outputs(p, transform(x)))


def outputs_of(apply_fn) -> Callable[[Any, jax.Array], Outputs]:
  """apply_fn's outputs: an ApplyFn's own, or a plain logits function's logits alone."""
  if isinstance(apply_fn, ApplyFn):
    return apply_fn.outputs
  return lambda p, x: Outputs(apply_fn(p, x))


def over_params(apply_fn, fn: Callable, in_axes: tuple, out_axes: int = 0) -> Callable:
  """jax.vmap(fn, in_axes, out_axes) (in_axes of 0 and None: mapped and shared arguments), or, for
  a model that declares vmapping over its parameters slow, the same one slice after another
  (lax.map)."""
  if getattr(apply_fn, 'vmaps_over_params', True):
    return jax.vmap(fn, in_axes=in_axes, out_axes=out_axes)

  def in_sequence(*args):
    mapped = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

    def one(slices):
      it = iter(slices)
      return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, out_axes), jax.lax.map(one, mapped))

  return in_sequence
