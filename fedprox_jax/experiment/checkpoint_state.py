"""How a checkpoint names, digests and attributes the state it holds."""
import hashlib
import json

import jax
import numpy as np

from fedprox_jax.config_fields import flatten
from fedprox_jax.experiment.workdir import resumable

FORMAT_VERSION = 1


def _key_name(key) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def flat_state(tree) -> dict[str, np.ndarray]:
  """A state pytree as {'dotted.path': host array}: a layout that names every array."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'.'.join(_key_name(k) for k in path): np.asarray(leaf) for path, leaf in leaves}


def unflat_state(flat: dict, like):
  """The pytree of `like`'s structure with the arrays of `flat` (None unless names, shapes and
  dtypes all match)."""
  paths = list(flat_state(jax.tree.map(lambda a: np.zeros(0), like)))  # Names only.
  like_leaves = jax.tree.leaves(like)
  if sorted(paths) != sorted(flat) or any(
      np.shape(flat[p]) != np.shape(a) or np.asarray(flat[p]).dtype != np.dtype(a.dtype)
      for p, a in zip(paths, like_leaves)):
    return None
  return jax.tree.unflatten(jax.tree.structure(like), [flat[p] for p in paths])


def digest(round_index: int, state: dict, progress: dict, config: str = '') -> str:
  """SHA-256 of the format, round, config fingerprint, progress and every array's name, dtype,
  shape and bytes."""
  h = hashlib.sha256(
      json.dumps(
          {
              'format': FORMAT_VERSION,
              'round': round_index,
              'config': config,
              'progress': progress
          },
          sort_keys=True).encode())
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def fingerprint(configs) -> str:
  """What a checkpoint must have been made by: the configs of its runs, without the fields that
  may change on resumption (paths, devices, round count)."""
  kept = [{k: v for k, v in sorted(flatten(c).items()) if not resumable(k)} for c in configs]
  return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:32]
