"""Per-epoch shuffles computed one position at a time.

A client's epoch order is a keyed pseudorandom permutation of range(n) built by the swap-or-not
shuffle (Hoang, Morris, Rogaway, CRYPTO 2012): each round pairs x with K - x (mod n) and swaps the
pair when a keyed hash of the pair says so. Position i of the order costs O(rounds) scalar work, so
a training step fetches its batch of shuffled indices without materialising or sorting the whole
permutation; the compiled round stays free of data-dependent shapes. With 48 rounds the orders pass
the uniformity checks in tests/shuffle_test.py (permutation counts for n = 5, position marginals).
"""
import jax
import jax.numpy as jnp

SWAP_OR_NOT_ROUNDS = 48


def _mix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finaliser: a cheap bijective avalanche mix."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def epoch_key(client_key: jax.Array, epoch: jax.Array) -> jax.Array:
  """The shuffle key of one client's epoch: uint32 [SWAP_OR_NOT_ROUNDS]."""
  return jax.random.bits(jax.random.fold_in(client_key, epoch), (SWAP_OR_NOT_ROUNDS,), jnp.uint32)


def round_tables(key: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Every round's pairing offset and hash salt for a permutation of range(n): uint32 [rounds]."""
  n = jnp.maximum(n, 1).astype(jnp.uint32)
  return _mix32(key) % n, _mix32(key ^ jnp.uint32(0x9E3779B9))


def permute_with_tables(offsets: jax.Array, salts: jax.Array, n: jax.Array,
                        positions: jax.Array) -> jax.Array:
  """permute() with its round tables already computed (they depend only on key and n)."""
  n = jnp.maximum(n, 1).astype(jnp.uint32)
  x = positions.astype(jnp.uint32)
  for r in range(SWAP_OR_NOT_ROUNDS):  # Unrolled: XLA fuses the chain into one loop.
    partner = (offsets[r] + n - x) % n
    swap = (_mix32(jnp.maximum(x, partner) ^ salts[r]) >> 31) == 1
    x = jnp.where(swap, partner, x)
  return x.astype(jnp.int32)


def permute(key: jax.Array, n: jax.Array, positions: jax.Array) -> jax.Array:
  """Elements at `positions` (each in [0, n)) of the keyed permutation of range(n)."""
  return permute_with_tables(*round_tables(key, n), n, positions)
