"""Stochastic uniform quantization of one tensor (compression.bits b): unbiased, within one level.

The coordinates sent (all of them, or those top-k kept) are mapped onto the 2^b evenly spaced
levels that span their [min, max], each rounded up or down at random with the probabilities that
make its expectation the value itself (stochastic rounding; the per-tensor min-max variant, not
QSGD's norm-scaled one): a client sends b bits a coordinate and the tensor's min and max (or
step) as two 32-bit floats. b = 32 sends the values as they are (float32). The uniform draws come
from the client's own key of the round (engine/round_program.py: from (seed, round, client)), as
jax.random.uniform makes them (uniform_draws.py: the same values, at a sixth of its CPU cost).
"""
import jax
import jax.numpy as jnp

from fedprox_jax.aggregation import uniform_draws

EXACT_BITS = 32  # Values sent as the float32 they are.


def quantize(x: jax.Array, bits: jax.Array, key, sent: jax.Array) -> jax.Array:
  """x's `sent` coordinates quantized to 2^bits levels (0 elsewhere); x itself where bits is 0
  (off) or 32. `bits` is a traced per-run value: a run that does not quantize skips the draws (a
  lax.cond, where the stage runs unbatched: core/lanes.py)."""
  return jax.lax.cond((bits > 0) & (bits < EXACT_BITS), _quantized,
                      lambda x, *_: jnp.where(sent, x, 0.0), x, bits, key, sent)


def _quantized(x: jax.Array, bits: jax.Array, key, sent: jax.Array) -> jax.Array:
  levels = jnp.maximum(jnp.exp2(bits) - 1.0, 1.0)
  lo = jnp.min(jnp.where(sent, x, jnp.inf))
  hi = jnp.max(jnp.where(sent, x, -jnp.inf))
  # Halves, so that no difference overflows float32 however wide the range.
  spread = hi * 0.5 - lo * 0.5
  wide = spread > 0  # A constant tensor is its min: exact.
  t = (x * 0.5 - lo * 0.5) / jnp.where(wide, spread, 1.0) * levels
  # floor(t + u), u ~ U[0, 1): t's floor, plus one with probability t - floor(t).
  level = jnp.clip(jnp.floor(t + uniform_draws.uniform(key, x.shape).astype(x.dtype)), 0.0, levels)
  # lo + (hi - lo) f as lo (1 - f) + hi f: exactly lo and hi at the ends, and no overflow.
  f = level / levels
  return jnp.where(sent, jnp.where(wide, lo * (1.0 - f) + hi * f, x), 0.0)
