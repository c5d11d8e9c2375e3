"""train_and_evaluate: one federated run from a config, with its workdir."""
import logging
import pathlib

import ml_collections

from fedprox_jax import quiet
from fedprox_jax import tasks
from fedprox_jax.engine import processes
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import settings
from fedprox_jax.experiment import validation
from fedprox_jax.experiment.checkpoint_state import earlier_fingerprints
from fedprox_jax.experiment.checkpoint_state import fingerprint
from fedprox_jax.experiment.checkpoints import Checkpoints
from fedprox_jax.experiment.checkpoints import Restored
from fedprox_jax.experiment.workdir import WorkdirLock
from fedprox_jax.experiment.workdir import check_name
from fedprox_jax.experiment.workdir import prepare_workdir
from fedprox_jax.experiment.workdir import refuse_sweep_run
from fedprox_jax.experiment.writers import RunWriter


def check_rounds_done(restored: Restored | None, num_rounds: int, workdir: str) -> None:
  """A smaller num_rounds cannot undo the rounds of a workdir's checkpoint."""
  if restored and restored.round > num_rounds:
    raise ConfigError(
        f'config.num_rounds = {num_rounds} is below the {restored.round} rounds that the run in '
        f'--workdir {workdir} has done: use num_rounds >= {restored.round}, or another workdir')


def finish_completed(writer: RunWriter, restored: Restored, evaluate_at) -> None:
  """For a run whose last checkpoint is its last round: checks its records and makes sure its
  summary is there and right; nothing else is touched."""
  writer.resume(restored.round, evaluate_at)
  writer.close(rounds.summarize(writer.records, restored.progress) if restored.progress else None)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | None = None,
                       overwrite: bool = False) -> list[dict]:
  """Runs one federated experiment; returns its metrics records (also in workdir/metrics.jsonl).

  A workdir is locked for the whole run. One that holds a checkpoint of the same config is resumed
  from its newest checkpoint that verifies (a finished one is left as it is); one of another config
  is refused unless `overwrite`, which starts it over.
  """
  with quiet.library_call():  # The caller's logging as it was afterwards.
    return _train_and_evaluate(config, workdir, overwrite)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None,
                        overwrite: bool) -> list[dict]:
  validation.validate(config)
  validation.warn_unused(config)
  processes.join(settings.for_compute(config))
  if not processes.is_leader():  # The leader alone touches the workdir.
    status, restored_round = processes.hear()
    if status == processes.COMPLETE:
      return []
    return _train(config, RunWriter(None, config), None, None, restored_round)
  with processes.telling_failure():
    if not workdir:
      return _train(config, RunWriter(None, config), None, None)
    check_name(workdir)
    refuse_sweep_run(workdir)
    with WorkdirLock(workdir) as lock:
      try:
        return _in_workdir(config, workdir, overwrite)
      except BaseException:
        metrics = pathlib.Path(workdir) / 'metrics.jsonl'
        lock.remove_if_unstarted(metrics.exists() and metrics.stat().st_size > 0)
        raise


def _in_workdir(config: ml_collections.ConfigDict, workdir: str, overwrite: bool) -> list[dict]:
  prepare_workdir(workdir, {'config.json': config}, overwrite)
  checkpoints = Checkpoints(
      pathlib.Path(workdir) / 'checkpoints', config.checkpoint_every, config.checkpoint_keep,
      fingerprint([config]), earlier_fingerprints([config]))
  restored = checkpoints.restore()
  check_rounds_done(restored, config.num_rounds, workdir)
  writer = RunWriter(workdir, config)
  if restored and restored.round == config.num_rounds:
    processes.announce(processes.COMPLETE)
    finish_completed(writer, restored, rounds.evaluation_rounds(config.num_rounds,
                                                                config.eval_every))
    logging.info(
        'The run in %s is complete (round %d of %d): nothing to do; a larger '
        '--config.num_rounds extends it', workdir, restored.round, config.num_rounds)
    return writer.records
  try:
    return _train(config, writer, checkpoints, restored)
  except BaseException:
    writer.abort()
    raise
  finally:
    checkpoints.close()


def _train(config: ml_collections.ConfigDict,
           writer: RunWriter,
           checkpoints: Checkpoints | None,
           restored: Restored | None,
           restored_round: int = -1) -> list[dict]:
  """The rounds; a process other than the leader passes the round the leader restored instead of
  its checkpoint, and receives the state from the leader."""
  data = tasks.load(config.data)
  # The others load the data once the leader has (from the cache it filled, not all at once).
  processes.announce(processes.START, restored.round if restored else -1)
  stats = data.statistics()
  logging.info(
      'Partition: %s',
      ', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}' for k, v in stats.items()))
  sim = settings.simulation(config, data, [settings.for_run(config)])
  del data  # The device holds what the rounds need.
  restored = rounds.share_restored(sim, config, restored, restored_round)
  before = restored.progress['wall_s'] if restored and restored.progress else 0.0
  progress = rounds.run_rounds(sim, config, [writer], [config.algorithm.name], checkpoints,
                               restored, stats)
  summary = rounds.summarize(writer.records, progress)
  writer.close(summary)
  here = progress['wall_s'] - before
  sessions = f' ({progress["wall_s"]:.1f} s with the earlier sessions)' if before else ''
  logging.info('Rounds done in %.1f s%s: %s', here, sessions, ', '.join(
      f'{k} {v:.4f}' for k, v in summary.items()
      if k.startswith(('final/test', 'final/local_test', 'last10/')) and
      not k.startswith('final/local_test/accuracy_')))  # (Its spread: summary.json.)
  return writer.records
