"""How a checkpoint names, digests and attributes the state it holds."""
import hashlib
import json

import jax
import numpy as np

from fedprox_jax.config_fields import flatten
from fedprox_jax.experiment.workdir import added_fields
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


def _fingerprint(configs, omit_from: int) -> str:
  """The fingerprint as a release that knew only the first `omit_from` added fields computed it:
  each later added field at the value that gives earlier releases' runs is left out."""
  later = dict(list(added_fields().items())[omit_from:])
  kept = [{
      k: v
      for k, v in sorted(flatten(c).items())
      if not resumable(k) and not (k in later and v == later[k])
  }
          for c in configs]
  return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:32]


def fingerprint(configs) -> str:
  """What a checkpoint must have been made by: the configs of its runs, without the fields that
  may change on resumption (paths, devices, round count), and without the fields added since
  earlier releases (workdir.added_fields) where they hold the value that gives those releases'
  runs, so that adding a field leaves every fingerprint as it was."""
  return _fingerprint(configs, 0)


def earlier_fingerprints(configs) -> tuple[str, ...]:
  """The same configs' fingerprints as the releases before this one computed them (each counted
  every field it knew); checkpoints made by those releases carry one of them."""
  return tuple(_fingerprint(configs, i) for i in range(1, len(added_fields()) + 1))
