"""train_and_evaluate: one federated run from a config; the round loop shared with sweeps."""
import logging
import pathlib
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np

from fedprox_jax import adaptive_mu
from fedprox_jax import config_checks
from fedprox_jax import datasets
from fedprox_jax import devices
from fedprox_jax.checkpoints import Checkpoints, Restored
from fedprox_jax.simulation import RunSpec, Simulation
from fedprox_jax.workdir import WorkdirLock, prepare_workdir
from fedprox_jax.writers import RunWriter


class NonFiniteError(RuntimeError):
  """Training diverged; the message names the round."""


class Interrupted(Exception):
  """The user stopped the run (Ctrl-C); the message says where it stands and how to go on."""


def evaluation_rounds(num_rounds: int, eval_every: int) -> set[int]:
  return {0, num_rounds} | set(range(eval_every, num_rounds + 1, eval_every))


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(seconds, 0)))


def server_state(params, mu_state: adaptive_mu.State) -> dict:
  """What the next round needs: the global models and the (adaptive) mu of every run."""
  return {'params': params, **mu_state._asdict()}


def new_progress(num_lanes: int, data_stats: dict) -> dict:
  """What a run has done so far; checkpoints carry it, so a resumed run's summary covers all its
  rounds."""
  return dict(executed_steps=0, real_steps=0, wall_s=0.0, round_times=[], num_lanes=num_lanes,
              data=data_stats)


def _restore_state(sim: Simulation, restored: Restored, like: dict):
  """The checkpoint's state on the simulation's devices, after checking it has the right shapes."""
  got = jax.tree.map(lambda a: (a.shape, a.dtype.name), restored.state)
  want = jax.tree.map(lambda a: (a.shape, np.dtype(a.dtype).name), like)
  if got != want:
    raise config_checks.ConfigError(
        f'the checkpoint of round {restored.round} holds a server state of other shapes than this '
        'config makes: use another workdir, or --overwrite to start it over')
  params = jax.tree.map(lambda a, p: jax.device_put(a, p.sharding), restored.state['params'],
                        sim.initial_params)
  return params, adaptive_mu.State(*(np.asarray(restored.state[k])
                                     for k in adaptive_mu.State._fields))


def run_rounds(sim: Simulation, writers: Sequence[RunWriter], labels: Sequence[str],
               checkpoints: Checkpoints | None = None, restored: Restored | None = None,
               data_stats: dict | None = None) -> dict:
  """Advances every run of `sim` to round config.num_rounds, writing a record per evaluation,
  from `restored` (a checkpoint) if given, saving checkpoints as it goes; returns the progress
  (program totals and round times) of all the rounds, those before `restored` included."""
  c = sim.config
  evaluate_at = evaluation_rounds(c.num_rounds, c.eval_every)
  adaptive = np.array([run.adaptive_mu for run in sim.runs])
  params, mu_state, first = sim.initial_params, adaptive_mu.initial(np.asarray(sim.mu)), 0
  progress = new_progress(sim.num_lanes, data_stats or {})
  if restored:
    params, mu_state = _restore_state(sim, restored, server_state(params, mu_state))
    first = restored.round + 1
    if restored.progress:
      progress.update({k: v for k, v in restored.progress.items() if k != 'num_lanes'})
    logging.info('Resuming from the checkpoint of round %d', restored.round)
  mu = jax.device_put(mu_state.mu, sim.mu.sharding)
  for writer in writers:
    writer.start(restored.round if restored else None,
                 {r for r in evaluate_at if restored and r <= restored.round})
  start, wall_before = time.perf_counter(), progress['wall_s']
  round_times = progress['round_times']
  done = first - 1
  try:
    for r in range(first, c.num_rounds + 1):
      tick = time.perf_counter()
      stats = {}
      if r > 0:
        params, stats = sim.run_round(params, r, mu)
        stats = {k: np.asarray(v) for k, v in stats.items()}  # Waits for the round to finish.
        bad = np.flatnonzero(~stats['finite'])
        if bad.size:
          raise NonFiniteError(f'round {r}: the global model of run {labels[bad[0]]} became '
                               'non-finite (NaN/inf); lower client.learning_rate')
        for k in ('executed_steps', 'real_steps'):
          progress[k] += int(stats[k])
        round_times.append(time.perf_counter() - tick)
      if r in evaluate_at:
        metrics = _evaluate_and_write(sim, params, r, stats, mu_state.mu, round_times, writers,
                                      start)
        if adaptive.any():  # Validation guarantees an evaluation every round.
          mu_state = adaptive_mu.update(mu_state, metrics['train/loss'], adaptive)
          mu = jax.device_put(mu_state.mu, sim.mu.sharding)
      progress['wall_s'] = wall_before + time.perf_counter() - start
      if checkpoints and r > 0 and checkpoints.due(r, last=r == c.num_rounds):
        for writer in writers:
          writer.sync()  # The records the checkpoint follows are on disk first.
        checkpoints.save(r, server_state(params, mu_state), progress)
      done = r
  except KeyboardInterrupt:
    raise Interrupted(_interrupted_message(done, checkpoints)) from None
  return progress


def _interrupted_message(done: int, checkpoints: Checkpoints | None) -> str:
  if checkpoints is None:
    return f'interrupted after round {done}; nothing was saved (no --workdir)'
  since = (f'from the checkpoint of round {checkpoints.last_saved}'
           if checkpoints.last_saved is not None else 'from round 0: no checkpoint yet')
  return f'interrupted after round {done}; rerun the same command to resume ({since})'


def _evaluate_and_write(sim: Simulation, params, r: int, stats: dict, mu: np.ndarray,
                        round_times: list[float], writers: Sequence[RunWriter],
                        start: float) -> dict[str, np.ndarray]:
  """Evaluates every run's model, writes its record and logs a progress line with an ETA."""
  metrics = sim.evaluate(params)
  elapsed = time.perf_counter() - start
  for i, writer in enumerate(writers):
    record = {'round': r, **{k: float(v[i]) for k, v in metrics.items()}, 'mu': float(mu[i])}
    if stats:
      record.update({'round/stragglers': int(stats['stragglers'][i]),
                     'round/active_clients': int(stats['active_clients'][i]),
                     'time/round_s': round_times[-1]})
    record['time/elapsed_s'] = elapsed
    writer.write(record)
  seconds = float(np.median(round_times[-10:])) if round_times else 0.0
  shown = ' '.join(f'{k} {float(np.mean(v)):.4f}' for k, v in metrics.items()
                   if k in ('train/loss', 'test/accuracy', 'local_test/accuracy'))
  num_rounds = sim.config.num_rounds
  logging.info('round %d/%d  %s  %.4f s/round  ETA %s', r, num_rounds, shown, seconds,
               _format_eta(seconds * (num_rounds - r)))
  return metrics


def summarize(records: list[dict], progress: dict) -> dict:
  """summary.json: the last record, means over the last 10 rounds, the program's totals over all
  the rounds (in a sweep, those of all the runs it held together) and the partition."""
  last = records[-1]
  summary = {'final/' + k: v for k, v in last.items()}
  tail = [r for r in records if r['round'] > last['round'] - 10 and r['round'] > 0]
  for key in ('test/accuracy', 'local_test/accuracy', 'train/loss'):
    if tail and key in tail[0]:
      summary[f'last10/{key}'] = float(np.mean([r[key] for r in tail]))
  times = progress['round_times']
  summary['program'] = dict(
      executed_steps=progress['executed_steps'], real_steps=progress['real_steps'],
      wall_s=progress['wall_s'], median_round_s=float(np.median(times)) if times else 0.0,
      num_lanes=progress['num_lanes'],
      real_work_share=progress['real_steps'] / max(progress['executed_steps'], 1))
  summary['data'] = progress['data']
  return summary


def check_rounds_done(checkpoints: Checkpoints, num_rounds: int, workdir: str) -> None:
  """A smaller num_rounds cannot undo rounds a workdir's checkpoints hold."""
  done = max(checkpoints.rounds(), default=0)
  if done > num_rounds:
    raise config_checks.ConfigError(
        f'config.num_rounds = {num_rounds} is below the {done} rounds that the run in --workdir '
        f'{workdir} has done: use num_rounds >= {done}, another workdir, or --overwrite')


def finish_completed(writer: RunWriter, restored: Restored, evaluate_at: set[int]) -> None:
  """For a run whose last checkpoint is its last round: checks its records and makes sure its
  summary is there and right; nothing else is touched."""
  writer.resume(restored.round, evaluate_at)
  writer.close(summarize(writer.records, restored.progress) if restored.progress else None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None,
                       overwrite: bool = False) -> list[dict]:
  """Runs one federated experiment; returns its metrics records (also in workdir/metrics.jsonl).

  A workdir is locked for the whole run. One that holds a checkpoint of the same config is resumed
  from its newest checkpoint that verifies (a finished one is left as it is); one of another config
  is refused unless `overwrite`, which starts it over.
  """
  config_checks.validate(config)
  if not workdir:
    devices.configure(config)
    return _train(config, RunWriter(None, config), None, None)
  with WorkdirLock(workdir):
    prepare_workdir(workdir, {'config.json': config}, overwrite)
    devices.configure(config)
    checkpoints = Checkpoints(pathlib.Path(workdir) / 'checkpoints', config.checkpoint_every,
                              config.checkpoint_keep)
    check_rounds_done(checkpoints, config.num_rounds, workdir)
    restored = checkpoints.restore()
    writer = RunWriter(workdir, config)
    if restored and restored.round == config.num_rounds:
      finish_completed(writer, restored, evaluation_rounds(config.num_rounds, config.eval_every))
      logging.info('The run in %s is complete (round %d of %d): nothing to do; a larger '
                   '--config.num_rounds extends it', workdir, restored.round, config.num_rounds)
      return writer.records
    try:
      return _train(config, writer, checkpoints, restored)
    finally:
      checkpoints.close()


def _train(config: ml_collections.ConfigDict, writer: RunWriter, checkpoints: Checkpoints | None,
           restored: Restored | None) -> list[dict]:
  data = datasets.load_federated(config.data)
  stats = data.statistics()
  logging.info('Partition: %s', ', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}'
                                          for k, v in stats.items()))
  sim = Simulation(config, data, [RunSpec.from_config(config)])
  del data  # The device holds what the rounds need.
  progress = run_rounds(sim, [writer], [config.algorithm.name], checkpoints, restored, stats)
  summary = summarize(writer.records, progress)
  writer.close(summary)
  logging.info('Done in %.1f s: %s', progress['wall_s'],
               ', '.join(f'{k} {v:.4f}' for k, v in summary.items()
                         if k.startswith(('final/test', 'final/local_test', 'last10/'))))
  return writer.records
