"""Sweeps: grids of runs that share data, model and round count, run chunk by chunk.

Runs whose algorithm and server optimizer have the same structure share one compiled program,
advanced together; each structure gets its own (experiment/chunks.py). Each run gets a directory
with the files of a single run; the sweep directory gets results.csv, one tidy row per (run,
evaluated round), and checkpoints per chunk of runs. The runs themselves are experiment/grid.py's.
"""
import logging
import pathlib

import ml_collections

from fedprox_jax import quiet
from fedprox_jax import tasks
from fedprox_jax.engine import processes
from fedprox_jax.errors import WriteError
from fedprox_jax.experiment import chunks as chunks_lib
from fedprox_jax.experiment import grid
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import settings
from fedprox_jax.experiment import single_run
from fedprox_jax.experiment import sweep_results
from fedprox_jax.experiment.checkpoint_state import earlier_fingerprints
from fedprox_jax.experiment.checkpoint_state import fingerprint
from fedprox_jax.experiment.checkpoints import Checkpoints
from fedprox_jax.experiment.workdir import WorkdirLock
from fedprox_jax.experiment.workdir import prepare_workdir
from fedprox_jax.experiment.writers import RunWriter
from fedprox_jax.files import write_atomically


def _write(path: pathlib.Path, text: str) -> None:
  try:
    write_atomically(path, text)
  except OSError as e:
    raise WriteError(f'{path} could not be written ({e.strerror}): free disk space or fix the '
                     'directory, then rerun the same command to resume') from None


def run_sweep(base: ml_collections.ConfigDict,
              sweep: ml_collections.ConfigDict,
              workdir: str | None,
              overwrite: bool = False) -> dict[str, list[dict]]:
  """Runs every run of the sweep; returns {run name: metrics records}.

  A workdir is locked for the whole sweep. One of the same sweep resumes it: finished chunks of
  runs are kept as they are, an interrupted one continues from its newest verified checkpoint.
  """
  with quiet.library_call():  # The caller's logging as it was afterwards.
    return _run_sweep(base, sweep, workdir, overwrite)


def _run_sweep(base: ml_collections.ConfigDict, sweep: ml_collections.ConfigDict,
               workdir: str | None, overwrite: bool) -> dict[str, list[dict]]:
  sweep = grid.with_defaults(sweep)
  base, runs = grid.prepare(base, sweep)
  processes.join(settings.for_compute(base))
  with processes.telling_failure():
    if not workdir or not processes.is_leader():  # The leader alone touches the workdir.
      return _run_chunks(base, sweep, runs, None)
    root = pathlib.Path(workdir)
    with WorkdirLock(workdir) as lock:
      try:
        prepare_workdir(workdir, {'sweep.json': sweep, 'base_config.json': base}, overwrite)
        for name, config in (('sweep.json', sweep), ('base_config.json', base)):
          _write(root / name, config.to_json(indent=2, sort_keys=True) + '\n')
        return _run_chunks(base, sweep, runs, root)
      except BaseException:
        lock.remove_if_unstarted(any(p.stat().st_size for p in root.glob('runs/*/metrics.jsonl')))
        raise


def _run_chunks(base, sweep, runs, root: pathlib.Path | None) -> dict[str, list[dict]]:
  """The chunks one after the other. With several processes the leader (which alone has `root`)
  tells the others, chunk by chunk, whether it is complete or from which round it resumes, and
  hands them the state it restored."""
  leader = processes.is_leader()
  chunks = chunks_lib.split(runs, sweep.max_runs_per_chunk)
  logging.info('Sweep of %d runs in %d program%s%s', len(runs), len(chunks),
               's' if len(chunks) > 1 else '',
               ' (one per structure and memory chunk)' if len(chunks) > 1 else '')
  evaluate_at = rounds.evaluation_rounds(base.num_rounds, base.eval_every)
  checkpoints = [
      Checkpoints(root / 'checkpoints' / chunk.label, base.checkpoint_every, base.checkpoint_keep,
                  fingerprint([run.config
                               for run in chunk.runs]),
                  earlier_fingerprints([run.config
                                        for run in chunk.runs])) if root else None
      for chunk in chunks
  ]
  data, records, rows = None, {}, []
  for i, chunk in enumerate(chunks):
    logging.info('Chunk %d/%d: %d runs of %s', i + 1, len(chunks), len(chunk.runs),
                 chunk.description)
    writers = [
        RunWriter(str(root / 'runs' / run.name) if root else None, run.config) for run in chunk.runs
    ]
    restored, restored_round = None, -1
    if leader:
      processes.expect_announcement()
      restored = checkpoints[i].restore() if root else None
      single_run.check_rounds_done(restored, base.num_rounds, str(root))
      complete = bool(restored and restored.round == base.num_rounds)
      if complete:
        processes.announce(processes.COMPLETE)
    else:
      status, restored_round = processes.hear()
      complete = status == processes.COMPLETE
    if complete:
      for writer in writers if root else []:
        single_run.finish_completed(writer, restored, evaluate_at)
      logging.info('Chunk %d/%d is complete: kept as it is', i + 1, len(chunks))
    else:
      if data is None:
        data = tasks.load(base.data)
      # The others load the data once the leader has (from the cache it filled).
      processes.announce(processes.START, restored.round if restored else -1)
      config = chunk.runs[0].config
      sim = settings.simulation(config, data, [settings.for_run(run.config) for run in chunk.runs])
      restored = rounds.share_restored(sim, config, restored, restored_round)
      try:
        later = sum(len(c.runs) for c in chunks[i + 1:]) * base.num_rounds
        progress = rounds.run_rounds(sim, config, writers, [run.name for run in chunk.runs],
                                     checkpoints[i], restored, data.statistics(), later)
      except BaseException:
        for writer in writers:
          writer.abort()
        raise
      finally:
        if checkpoints[i]:
          checkpoints[i].close()
      for writer in writers:
        writer.close(rounds.summarize(writer.records, progress))
    for run, writer in zip(chunk.runs, writers):
      records[run.name] = writer.records
      rows += sweep_results.rows_of(run, writer.records)
    if root:
      _write(root / 'results.csv', sweep_results.table_text(rows))
  if root:
    logging.info('Wrote %s and %d run directories', root / 'results.csv', len(runs))
  return records
