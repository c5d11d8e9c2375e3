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
from fedprox_jax.checkpoints import Checkpoints, prepare_workdir, server_state
from fedprox_jax.simulation import RunSpec, Simulation
from fedprox_jax.writers import RunWriter


class NonFiniteError(RuntimeError):
  """Training diverged; the message names the round."""


def evaluation_rounds(num_rounds: int, eval_every: int) -> set[int]:
  return {0, num_rounds} | set(range(eval_every, num_rounds + 1, eval_every))


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(seconds, 0)))


def run_rounds(sim: Simulation, writers: Sequence[RunWriter], labels: Sequence[str],
               checkpoints: Checkpoints | None = None) -> None:
  """Advances every run of `sim` to round config.num_rounds, writing a record per evaluation;
  with `checkpoints`, from the latest checkpoint if there is one, saving new ones as it goes."""
  c = sim.config
  evaluate_at = evaluation_rounds(c.num_rounds, c.eval_every)
  adaptive = np.array([run.adaptive_mu for run in sim.runs])
  params, mu_state, first = sim.initial_params, adaptive_mu.initial(np.asarray(sim.mu)), 0
  restored = checkpoints.restore(server_state(params, mu_state)) if checkpoints else None
  if restored:
    resumed, state = restored
    params, first = state['params'], resumed + 1
    mu_state = adaptive_mu.State(*(np.asarray(state[k]) for k in adaptive_mu.State._fields))
    logging.info('Resuming from the checkpoint of round %d', resumed)
  mu = jax.device_put(mu_state.mu, sim.mu.sharding)
  for writer in writers:
    writer.start(first - 1 if restored else None)
  totals = dict(executed_steps=0, real_steps=0)
  start = time.perf_counter()
  round_times = []
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
      for k in totals:
        totals[k] += int(stats[k])
      round_times.append(time.perf_counter() - tick)
    if r in evaluate_at:
      metrics = _evaluate_and_write(sim, params, r, stats, mu_state.mu, round_times, writers,
                                    start)
      if adaptive.any():  # Validation guarantees an evaluation every round.
        mu_state = adaptive_mu.update(mu_state, metrics['train/loss'], adaptive)
        mu = jax.device_put(mu_state.mu, sim.mu.sharding)
    if checkpoints and r > 0:
      checkpoints.maybe_save(r, server_state(params, mu_state), last=r == c.num_rounds)
  sim.totals = dict(totals, wall_s=time.perf_counter() - start,
                    median_round_s=float(np.median(round_times)) if round_times else 0.0)


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


def summarize(records: list[dict], totals: dict, data_stats: dict, num_lanes: int) -> dict:
  last = records[-1]
  summary = {'final/' + k: v for k, v in last.items()}
  tail = [r for r in records if r['round'] > last['round'] - 10 and r['round'] > 0]
  for key in ('test/accuracy', 'local_test/accuracy', 'train/loss'):
    if tail and key in tail[0]:
      summary[f'last10/{key}'] = float(np.mean([r[key] for r in tail]))
  # The program's work: in a sweep, that of all the runs it held together.
  summary['program'] = dict(totals, num_lanes=num_lanes, real_work_share=totals['real_steps'] /
                            max(totals['executed_steps'], 1))
  summary['data'] = data_stats
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None,
                       overwrite: bool = False) -> list[dict]:
  """Runs one federated experiment; returns its metrics records (also in workdir/metrics.jsonl).

  A workdir that holds a checkpoint of the same config is resumed from it; one of another config
  is refused unless `overwrite`, which starts it over.
  """
  config_checks.validate(config)
  if workdir:
    prepare_workdir(workdir, {'config.json': config}, overwrite)
  devices.configure(config)
  data = datasets.load_federated(config.data)
  stats = data.statistics()
  logging.info('Partition: %s', ', '.join(f'{k} {v:.1f}' if isinstance(v, float) else f'{k} {v}'
                                          for k, v in stats.items()))
  sim = Simulation(config, data, [RunSpec.from_config(config)])
  del data  # The device holds what the rounds need.
  writer = RunWriter(workdir, config)
  checkpoints = (Checkpoints(pathlib.Path(workdir) / 'checkpoints', config.checkpoint_every,
                             config.checkpoint_keep) if workdir else None)
  try:
    run_rounds(sim, [writer], [config.algorithm.name], checkpoints)
  finally:
    if checkpoints:
      checkpoints.close()
  summary = summarize(writer.records, sim.totals, stats, sim.num_lanes)
  writer.close(summary)
  logging.info('Done in %.1f s: %s', sim.totals['wall_s'],
               ', '.join(f'{k} {v:.4f}' for k, v in summary.items()
                         if k.startswith(('final/test', 'final/local_test', 'last10/'))))
  return writer.records
