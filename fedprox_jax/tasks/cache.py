"""A task's partition, cached as a .npz keyed by a hash of the config fields that shape it, with a
SHA-256 of its arrays inside: a second run neither rebuilds nor reads the raw data (MNIST's
TensorFlow is not even imported), and a cache that was damaged or edited is built again."""
from collections.abc import Callable
import contextlib
import hashlib
import io
import json
import logging
import pathlib

import ml_collections
import numpy as np

from fedprox_jax.errors import DataError
from fedprox_jax.files import remove_stale_temporaries
from fedprox_jax.files import write_atomically


def key(data_config: ml_collections.ConfigDict, fields: tuple[str, ...], version: int) -> str:
  values = {k: data_config[k] for k in fields}
  values['version'] = version
  return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def digest(arrays: dict[str, np.ndarray]) -> str:
  """SHA-256 of the arrays' names, dtypes, shapes and bytes."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f'{name}|{a.dtype.str}|{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


_read_only = [False]  # Inside read_only(): caches are read, never written nor cleaned.


@contextlib.contextmanager
def read_only():
  """Inside, a cache that is there is read and a missing one is built in memory alone: nothing is
  written (a dry run's data)."""
  _read_only[0] = True
  try:
    yield
  finally:
    _read_only[0] = False


def cache_path(c: ml_collections.ConfigDict, cache_key: str) -> pathlib.Path:
  """Where the partition of config.data `c` with this key is cached."""
  return pathlib.Path(c.cache_dir or
                      '~/.cache/fedprox_jax').expanduser() / f'{c.name}-{cache_key}.npz'


def load_or_build(c: ml_collections.ConfigDict, cache_key: str, build: Callable[[], dict],
                  check: Callable[[dict], None], fix: str) -> dict[str, np.ndarray]:
  """The arrays of config.data `c` from its cache, else from `build()` (then cached). `check`
  raises ValueError for arrays that are not a usable partition: a cache is then built again, a
  new build refused with `fix` (what to change in config.data)."""
  path = cache_path(c, cache_key)
  cache_dir = path.parent
  if not _read_only[0]:
    remove_stale_temporaries(path)  # A build killed while caching left its half-written file.
  if path.exists():
    try:
      with np.load(path) as f:  # The zip's CRC-32s catch altered bytes as they are read.
        arrays = dict(f)
      if str(arrays.pop('sha256', '')) != digest(arrays):
        raise ValueError('its arrays do not match their digest')
      check(arrays)
      logging.info('Federated data from cache %s', path)
      return arrays
    except Exception as e:  # pylint: disable=broad-except  # zipfile, NumPy, the checks...
      logging.warning('The partition cache %s is unreadable (%s: %s); building it again', path,
                      type(e).__name__, e)
  else:
    logging.info('Building the federated partition (cache miss: %s)', path)
  arrays = build()
  try:
    check(arrays)
  except ValueError as e:
    raise DataError(f'the {c.name} partition of config.data is unusable ({e}): {fix}') from None
  if _read_only[0]:
    return arrays
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, sha256=np.array(digest(arrays)))
    write_atomically(path, buffer.getvalue())  # A killed run never leaves half a cache.
  except OSError as e:  # The run can go on without its cache.
    logging.warning('Could not cache the partition in %s (%s); the next run builds it again', path,
                    e.strerror)
  return arrays
