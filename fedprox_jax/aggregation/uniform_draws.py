"""Uniform draws in [0, 1) for quantization's rounding: the float32 values that
jax.random.uniform(key, shape) gives under JAX's default (partitionable) Threefry-2x32, computed
as one fused kernel.

On CPU, JAX lowers Threefry's 20 rounds as a loop of five steps whose state goes through memory
between them, about six times the cost of the same rounds unrolled (15 against 90 us for the
7,850 draws of one MNIST upload), and quantization draws once per coordinate at every client
job's end. So the rounds are unrolled here: Threefry-2x32-20 (Salmon et al. 2011) of the key on
the counter (0, the coordinate's flat index), the two output words xored, the top 23 bits as the
mantissa of a float in [1, 2), minus 1, as JAX's own steps do (tests/compression_test.py checks
the values against jax.random.uniform's, one for one).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_ONE = np.uint32(0x3F800000)  # 1.0f's bits.


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry_2x32(key: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 with 20 rounds of the key (uint32 [2]) on the counters (x0, x1)."""
  ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = _rotate_left(x1, r) ^ x0
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 draws in [0, 1) of `shape` from a raw uint32 [2] key."""
  size = math.prod(shape)
  if size >= 2**32:
    raise ValueError(f'{size:,} draws exceed the 2^32 counters of one key')
  counts = jax.lax.iota(jnp.uint32, size)
  words = threefry_2x32(key, jnp.zeros_like(counts), counts)
  bits = words[0] ^ words[1]
  floats = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | _ONE, jnp.float32) - 1.0
  return floats.reshape(shape)
