"""Server state on disk with orbax: save every few rounds, resume from the latest, refuse a workdir
written by another config.

The state is what the next round needs: the global models and mu (with the adaptive rule's
memory) of every run; the checkpoint's step is the round.
Every random draw of a round derives from (seed, round), so a resumed run repeats exactly what an
uninterrupted one would have done.
"""
import json
import logging
import pathlib
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp

from fedprox_jax.config_checks import ConfigError, flatten


class _QuietOrbax(logging.Filter):
  """Orbax logs every file it writes at INFO through absl's logger; keep its warnings only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in record.pathname


logging.getLogger('absl').addFilter(_QuietOrbax())

# Fields that may change between a run and its resumption: where things are read from and how
# the work is spread; more rounds extend a finished run.
_RESUMABLE_CHANGES = ('num_rounds', 'data.tfds_data_dir', 'data.manual_dir', 'data.cache_dir',
                      'compute.')


def config_differences(old: dict, new: dict) -> list[str]:
  """'field: old -> new' for each field that differs and may not change on resumption."""
  old, new = flatten(old), flatten(new)
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k) and not k.startswith(_RESUMABLE_CHANGES)]


def prepare_workdir(workdir: str, configs: dict[str, ml_collections.ConfigDict],
                    overwrite: bool) -> None:
  """Makes sure `workdir` can be written and, if it holds a run, that it is this one.

  `configs` maps a JSON file name in the workdir to the config it must match. With `overwrite`,
  an existing workdir is emptied first.
  """
  root = pathlib.Path(workdir)
  try:
    root.mkdir(parents=True, exist_ok=True)
    probe = root / '.write_test'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise ConfigError(f'--workdir {workdir} cannot be written ({e.strerror}): choose another '
                      'directory') from None
  if overwrite:
    for child in root.iterdir():
      shutil.rmtree(child) if child.is_dir() else child.unlink()
    return
  for name, config in configs.items():
    path = root / name
    if path.exists():
      diffs = config_differences(json.loads(path.read_text()), json.loads(config.to_json()))
      if diffs:
        raise ConfigError(f'--workdir {workdir} holds a run of another config ({"; ".join(diffs)})'
                          ': use another workdir, or --overwrite to start it over')


class Checkpoints:
  """The latest `keep` server states of a run (or of a chunk of a sweep's runs)."""

  def __init__(self, directory: pathlib.Path, every: int, keep: int):
    self.every = every
    self._manager = ocp.CheckpointManager(
        directory.absolute(), options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True))

  def restore(self, like: dict) -> tuple[int, dict] | None:
    """(round, state) of the latest checkpoint, with the shapes and shardings of `like`."""
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return step, self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def maybe_save(self, round_index: int, state: dict, last: bool) -> None:
    if round_index % self.every == 0 or last:
      self._manager.save(round_index, args=ocp.args.StandardSave(state))

  def close(self) -> None:
    self._manager.close()


def server_state(params, mu_state) -> dict:
  """What the next round needs: the global models and the (adaptive) mu of every run."""
  return {'params': params, **mu_state._asdict()}

