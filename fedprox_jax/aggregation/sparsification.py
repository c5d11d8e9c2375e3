"""Top-k sparsification of one tensor (compression.topk k): the ceil(k d) coordinates of largest
magnitude of its d, ties broken towards the lower index.

k is a traced per-run value, so the count cannot be a static shape (lax.top_k's): the k-th largest
magnitude is found by a binary search over the magnitudes' float32 bit patterns (which order non-
negative floats as their values do), 31 counting passes over the tensor, then exactly the count is
kept (the running count that breaks ties only where the tie at the k-th magnitude is wider than the
places left: a lax.cond, skipped where the stage runs unbatched, core/lanes.py; XLA's CPU cumsum is
a chain of some thirty kernels). The count is float32 ceil(k' d), k' the largest float32 at most k
(`at_most`: the value the program is given), so that it is ceil(k d) of the decimal k configured
(0.1 of 7,840 keeps 784, where float32(0.1) * 7840 would round to 784.00006) unless k d lies within
float32 rounding above a whole number (0.999 of 10,999 keeps 10,988) or d is past 2^24; the host's
byte count (encoding.py) computes the same float32 product, so the two always agree.
"""
import jax
import jax.numpy as jnp
import numpy as np


def at_most(fraction: float) -> float:
  """The largest float32 <= fraction (the value the program is given)."""
  f = np.float32(fraction)
  return float(np.nextafter(f, np.float32(0)) if float(f) > fraction else f)


def kept_count(fraction, size: int):
  """ceil(fraction * size) in float32, within [1, size]: jnp or NumPy alike (`fraction` float32)."""
  xp = jnp if isinstance(fraction, jax.Array) else np
  count = xp.ceil(xp.float32(fraction) * xp.float32(size))
  return xp.clip(count, 1, size).astype(xp.int32)


def top_k_mask(x: jax.Array, fraction: jax.Array) -> jax.Array:
  """Where x keeps its kept_count(fraction, x.size) coordinates of largest magnitude."""
  flat = jnp.abs(x.reshape(-1))
  bits = jax.lax.bitcast_convert_type(flat, jnp.int32)  # Monotone in |x| (non-negative floats).
  count = kept_count(fraction, flat.size)
  at_least = lambda t: jnp.sum(bits >= t)

  def halve(_, bounds):  # count(>= lo) >= count > count(>= hi)
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = at_least(mid) >= count
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

  kth, _ = jax.lax.fori_loop(0, 31, halve, (jnp.int32(0), jnp.int32(np.iinfo(np.int32).max)))
  above, tied = bits > kth, bits == kth
  places = count - jnp.sum(above)  # For the coordinates at the k-th magnitude: >= 1.
  keep = jax.lax.cond(
      jnp.sum(tied) > places,  # Ties: the first `places` of them, by index.
      lambda: above | (tied & (jnp.cumsum(tied) <= places)),
      lambda: bits >= kth)
  return keep.reshape(x.shape)
