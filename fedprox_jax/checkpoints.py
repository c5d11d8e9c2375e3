"""Checkpoints of the server state, verified when restored.

A checkpoint (orbax, one directory per round) holds two items: `state`, the server state as host
arrays (the global models and adaptive mu of every run), and `meta`, a JSON record of the format
version, the round, what the run had done so far (`progress`: its program totals and round times,
so a resumed run's summary covers all its rounds) and a SHA-256 digest of all of it. orbax
finalises a checkpoint directory atomically, so the digest is there exactly when the rest is.

Restoring tries checkpoints newest first. One that cannot be read, or whose contents do not match
its digest, is reported by name and moved aside (to CHECKPOINTS-rejected/), and the next older one
is tried; with none left the run starts from round 0. Every random draw of a round derives from
(seed, round), so resuming from any checkpoint repeats exactly what an uninterrupted run did.
"""
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

# Version 1: items `state` and `meta`. Checkpoints from before versioning hold one item, `default`,
# and no digest: they are restored with a warning that they cannot be verified.
FORMAT_VERSION = 1


class _QuietOrbax(logging.Filter):
  """Orbax logs every file it writes at INFO through absl's logger: keep its warnings only, each on
  one line (a failed save is reported by CheckpointError, naming the cause; its background
  threads' tracebacks would only repeat it)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if '/orbax/' not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    if record.exc_info or '\n' in record.getMessage():
      record.msg, record.args = ' '.join(record.getMessage().split())[:300], ()
      record.exc_info = record.exc_text = None
    return True


logging.getLogger('absl').addFilter(_QuietOrbax())


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written, or was written by a newer format; the message says what to do.
  """


class _Unusable(Exception):
  """This checkpoint cannot be restored (unreadable, incomplete or altered)."""


def _why(e: Exception) -> str:
  """The reason in a few words: the OS's, if the error carries an OS error code."""
  code = re.search(r"os_error_code='?(\d+)", str(e))
  if code:
    return os.strerror(int(code.group(1)))
  return getattr(e, 'strerror', None) or f'{type(e).__name__}: {" ".join(str(e).split())[:160]}'


@dataclasses.dataclass(frozen=True)
class Restored:
  round: int
  state: dict  # Host (NumPy) arrays.
  progress: dict | None  # None for a checkpoint from before versioning.


def digest(round_index: int, state: dict, progress: dict) -> str:
  """SHA-256 of the format, round, progress and every array's path, dtype, shape and bytes."""
  h = hashlib.sha256(json.dumps({'format': FORMAT_VERSION, 'round': round_index,
                                 'progress': progress}, sort_keys=True).encode())
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _as_host_arrays(path: pathlib.Path) -> dict:
  """An orbax PyTree item as NumPy arrays, whatever devices saved it."""
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree)
  return checkpointer.restore(path, restore_args=args)


class Checkpoints:
  """The latest `keep` server states of a run (or of a chunk of a sweep's runs)."""

  def __init__(self, directory: pathlib.Path, every: int, keep: int):
    self.directory = directory.absolute()
    self.every, self.keep = every, keep
    self._manager = None  # Made at the first save, after restore() has set rejects aside.
    self.last_saved: int | None = None

  def rounds(self) -> list[int]:
    """Rounds of the checkpoint directories on disk, oldest first (finished or not, valid or not)."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

  def restore(self) -> Restored | None:
    """The newest checkpoint that verifies; unusable ones are reported and moved aside."""
    rejected = 0
    for round_index in reversed(self.rounds()):
      try:
        restored = self._read(round_index)
      except _Unusable as e:
        rejected += 1
        logging.warning('%s; skipped (moved to %s)', e, self._reject(round_index))
        continue
      if rejected:
        logging.warning('Resuming from the older checkpoint of round %d; the records after it '
                        'are computed again', round_index)
      self.last_saved = round_index
      return restored
    if rejected:
      logging.warning('No checkpoint in %s could be verified: starting from round 0',
                      self.directory)
    return None

  def _read(self, round_index: int) -> Restored:
    path = self.directory / str(round_index)
    where = f'checkpoint {path}'
    if (path / 'default').is_dir() and not (path / 'meta').exists():
      try:
        state = _as_host_arrays(path / 'default')
      except Exception as e:  # orbax, tensorstore and JSON each raise their own kinds.
        raise _Unusable(f'{where} cannot be read ({_why(e)})') from None
      logging.warning('%s predates checkpoint digests and cannot be verified; restoring it '
                      'anyway', where)
      return Restored(round_index, state, None)
    try:
      meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
          path / 'meta', args=ocp.args.JsonRestore())
      version = meta['format']
    except Exception as e:
      raise _Unusable(f'{where} has no readable digest ({_why(e)})') from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
      raise CheckpointError(f'{where} has format version {version!r}, newer than this '
                            f'fedprox_jax reads ({FORMAT_VERSION}): upgrade fedprox_jax, or use '
                            'another workdir')
    try:
      state = ocp.StandardCheckpointer().restore(path / 'state')  # Saved as host arrays.
    except Exception as e:
      raise _Unusable(f'{where} cannot be read ({_why(e)})') from None
    try:
      intact = (meta['round'] == round_index and
                meta['sha256'] == digest(round_index, state, meta['progress']))
    except (KeyError, TypeError):
      intact = False
    if not intact:
      raise _Unusable(f'{where} does not match its digest (altered or damaged)')
    return Restored(round_index, state, meta['progress'])

  def _reject(self, round_index: int) -> pathlib.Path:
    aside = self.directory.with_name(self.directory.name + '-rejected')
    aside.mkdir(exist_ok=True)
    target, n = aside / str(round_index), 1
    while target.exists():
      target, n = aside / f'{round_index}.{n}', n + 1
    shutil.move(str(self.directory / str(round_index)), str(target))
    return target

  def due(self, round_index: int, last: bool) -> bool:
    return round_index % self.every == 0 or last

  def save(self, round_index: int, state: dict, progress: dict) -> None:
    """Saves `state` (device or host arrays) as the checkpoint of `round_index`."""
    host = jax.tree.map(np.asarray, state)
    meta = {'format': FORMAT_VERSION, 'round': round_index, 'progress': progress,
            'sha256': digest(round_index, host, progress)}
    try:
      if self._manager is None:
        self._manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, enable_async_checkpointing=False, create=True))
      self._manager.save(round_index, args=ocp.args.Composite(
          state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)))
    except Exception as e:  # orbax wraps the OS's errors in its own kinds.
      resume = (f'resume from the last checkpoint (round {self.last_saved})'
                if self.last_saved is not None else 'start again (no checkpoint yet)')
      raise CheckpointError(
          f'the checkpoint of round {round_index} could not be written to {self.directory} '
          f'({_why(e)}): free disk space or fix the directory, then rerun the same command to '
          f'{resume}') from None
    self.last_saved = round_index

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
