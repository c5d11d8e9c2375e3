"""The round loop shared by single runs and sweeps: rounds, evaluations, records, checkpoints."""
from collections.abc import Sequence
import logging
import time

import jax
import ml_collections
import numpy as np

from fedprox_jax import signals
from fedprox_jax.engine import processes
from fedprox_jax.engine.simulation import Simulation
from fedprox_jax.errors import ConfigError
from fedprox_jax.errors import Interrupted
from fedprox_jax.errors import NonFiniteError
from fedprox_jax.experiment import communication
from fedprox_jax.experiment import privacy
from fedprox_jax.experiment.checkpoint_state import flat_state
from fedprox_jax.experiment.checkpoint_state import unflat_state
from fedprox_jax.experiment.checkpoints import Checkpoints
from fedprox_jax.experiment.checkpoints import Restored
from fedprox_jax.experiment.writers import RunWriter


class EvaluationRounds:
  """Rounds 0, every eval_every-th and the last: those evaluated and recorded."""

  def __init__(self, num_rounds: int, eval_every: int):
    self.num_rounds, self.eval_every = num_rounds, eval_every

  def __contains__(self, r: int) -> bool:
    return r in (0, self.num_rounds) or (0 < r <= self.num_rounds and r % self.eval_every == 0)

  def up_to(self, last: int) -> set[int]:
    return {r for r in range(min(last, self.num_rounds) + 1) if r in self}


def evaluation_rounds(num_rounds: int, eval_every: int) -> EvaluationRounds:
  return EvaluationRounds(num_rounds, eval_every)


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(seconds, 0)))


class Eta:
  """Time left, from the wall time of whole rounds (training, evaluation, records, checkpoints):
  the mean over a recent window long enough to hold evaluations and checkpoints, times the rounds
  left, plus the rounds of a sweep's later chunks (`later_run_rounds`, counted per run)."""

  def __init__(self, config, num_runs: int, later_run_rounds: int = 0):
    self.window = max(20, 2 * config.eval_every, 2 * config.checkpoint_every)
    self.num_rounds, self.num_runs, self.later = config.num_rounds, num_runs, later_run_rounds
    self.laps: list[float] = []
    self._last = time.perf_counter()

  def lap(self) -> None:
    now = time.perf_counter()
    self.laps.append(now - self._last)
    self._last = now

  def per_round(self) -> float:
    recent = self.laps[-self.window:]
    return float(np.mean(recent)) if recent else 0.0

  def seconds_left(self, r: int) -> float:
    per_round = self.per_round()
    return per_round * (self.num_rounds - r) + per_round / self.num_runs * self.later


def new_progress(num_lanes: int, data_stats: dict) -> dict:
  """What a run has done so far; checkpoints carry it, so a resumed run's summary covers all its
  rounds."""
  return dict(executed_steps=0,
              real_steps=0,
              wall_s=0.0,
              round_times=[],
              num_lanes=num_lanes,
              data=data_stats)


def full_state(sim: Simulation, server, rule_state) -> dict:
  """Everything the next round needs, as a checkpoint holds it (the round rule's state, FedProx's
  adaptive mu, under 'adaptive': the name checkpoints have always given it)."""
  state = {'server': server}
  if rule_state is not None:
    state['adaptive'] = rule_state._asdict()
  if _private(sim):  # The noise it began with (a target epsilon's, for the rounds it had then).
    state['privacy'] = {'noise_multiplier': np.asarray(sim.hp['noise_multiplier'])}
  if sim.client_states:
    state['client_states'] = sim.client_states.get()
  return state


def _from_legacy(legacy: dict, like: dict) -> dict:
  """A checkpoint from before versioning (FedProx or FedAvg with a plain server) in today's names:
  its models and adaptive mu, and the rest of the state (empty for those) from `like`."""
  named = {f'server.{k}': v for k, v in flat_state(like['server']).items()}
  named.update({f'server.params.{k}': v for k, v in flat_state(legacy['params']).items()})
  named.update({f'adaptive.{k}': legacy[k] for k in like.get('adaptive', {})})
  return named


def _initial_rule_state(sim: Simulation):
  rule = sim.algorithm.round_rule
  return rule.initial(jax.tree.map(np.asarray, sim.hp)) if rule else None


def _template(sim: Simulation) -> dict:
  """The state a checkpoint of `sim` holds, as host arrays: the names and shapes to restore."""
  return jax.tree.map(np.asarray, full_state(sim, sim.initial_server, _initial_rule_state(sim)))


def _restored_state(restored: Restored, like: dict, mu: np.ndarray, adapted: bool = False):
  """The checkpoint's state in the structure of `like` (None unless names and shapes match);
  `mu` is the runs' configured mu, `adapted` whether their configs set algorithm.adaptive_mu."""
  named = _from_legacy(restored.state, like) if restored.legacy else restored.state
  if 'adaptive' not in like and 'adaptive.mu' in named:
    # Made by a release that kept an adaptive mu for every algorithm: harmless for a run that did
    # not ask for it (its mu never moved); otherwise resuming without it would change the run.
    if adapted or not np.array_equal(named['adaptive.mu'], mu):
      raise ConfigError(
          f'the checkpoint of round {restored.round} was made by a release that adapted mu for '
          'this algorithm, which this release does only for FedProx and FedAvg: resume it with '
          'the release that began it, or start it over with --overwrite')
    named = {k: v for k, v in named.items() if not k.startswith('adaptive.')}
  return unflat_state(named, like)


def _asked_to_adapt(config: ml_collections.ConfigDict) -> bool:
  """Whether the runs' configs set algorithm.adaptive_mu (whatever their algorithm reads)."""
  return bool(config.algorithm.get('adaptive_mu', False))


def _restore(sim: Simulation, config: ml_collections.ConfigDict, restored: Restored, like: dict):
  """The checkpoint's server state on the simulation's devices, and its round rule's state."""
  state = _restored_state(restored, like, np.asarray(sim.hp['mu']), _asked_to_adapt(config))
  if state is None:
    raise ConfigError(
        f'the checkpoint of round {restored.round} holds a state of other names or shapes than '
        'this config makes: use another workdir, or --overwrite to start it over')
  if sim.client_states:
    sim.client_states.set(state['client_states'])
  if _private(sim):
    _keep_restored_noise(sim, state['privacy']['noise_multiplier'], config.num_rounds)
  rule_state = _initial_rule_state(sim)
  if rule_state is not None:
    rule_state = type(rule_state)(*(np.asarray(state['adaptive'][k]) for k in rule_state._fields))
  return sim.place_server(state['server']), rule_state


def _private(sim: Simulation) -> bool:
  return 'gaussian_noise' in sim.program.aggregation


def _keep_restored_noise(sim: Simulation, restored: np.ndarray, num_rounds: int) -> None:
  """A run calibrated to a target epsilon keeps the noise it began with when extended (a
  config's noise multiplier itself cannot change: the checkpoint's fingerprint holds it)."""
  now = np.asarray(sim.hp['noise_multiplier'])
  if not np.array_equal(restored, now):
    logging.info(
        'Privacy: the runs keep the noise multipliers they began with (%s, calibrated for the '
        'rounds they had then; %s for %d rounds)', ', '.join(f'{v:.4f}' for v in restored),
        ', '.join(f'{v:.4f}' for v in now), num_rounds)
    sim.hp = sim.with_hp({'noise_multiplier': restored})


def ledgers(sim: Simulation) -> list[privacy.Ledger] | None:
  """Each run's privacy ledger (None for a program without DP)."""
  if not _private(sim):
    return None
  hp = jax.tree.map(np.asarray, sim.hp)
  return [
      # The noise as the device draws it (float32), the delta as configured (float64).
      privacy.Ledger(sim.num_clients, sim.program.clients_per_round,
                     float(hp['noise_multiplier'][i]),
                     privacy.delta(sim.runs[i].hp['delta'], sim.num_clients))
      for i in range(len(sim.runs))
  ]


def share_restored(sim: Simulation, config: ml_collections.ConfigDict, restored: Restored | None,
                   restored_round: int) -> Restored | None:
  """In a run of several processes, what the leader restored (`restored`), in every process: the
  others pass the restored round it announced, and get the state (the leader's own is returned
  as it is)."""
  if processes.count() == 1 or restored_round < 0 and restored is None:
    return restored
  like = _template(sim)
  if processes.is_leader():
    state = _restored_state(restored, like, np.asarray(sim.hp['mu']), _asked_to_adapt(config))
    processes.share(like if state is None else state)  # _restore then names the mismatch.
    return restored
  state = processes.share(like)
  return Restored(restored_round, flat_state(state), new_progress(sim.num_lanes, {}))


def run_rounds(sim: Simulation,
               config: ml_collections.ConfigDict,
               writers: Sequence[RunWriter],
               labels: Sequence[str],
               checkpoints: Checkpoints | None = None,
               restored: Restored | None = None,
               data_stats: dict | None = None,
               later_run_rounds: int = 0) -> dict:
  """Advances every run of `sim` (a program of `config`'s, which gives the rounds, evaluations and
  round rule asked for) to round config.num_rounds, writing a record per evaluation,
  from `restored` (a checkpoint) if given, saving checkpoints as it goes; returns the progress
  (program totals and round times) of all the rounds, those before `restored` included. The
  ETA counts `later_run_rounds` more (a sweep's chunks to come, in rounds times runs)."""
  c = config
  evaluate_at = evaluation_rounds(c.num_rounds, c.eval_every)
  rule = sim.algorithm.round_rule
  enabled = np.asarray(sim.hp[rule.enabled_by], bool) if rule else None
  server, first = sim.initial_server, 0
  rule_state = _initial_rule_state(sim)
  progress = new_progress(sim.num_lanes, data_stats or {})
  if restored:
    server, rule_state = _restore(sim, c, restored, _template(sim))
    first = restored.round + 1
    if restored.progress:
      progress.update({k: v for k, v in restored.progress.items() if k != 'num_lanes'})
      if restored.progress['num_lanes'] != sim.num_lanes:
        logging.warning(
            'Resuming on %d lanes where the checkpoint ran %d: float sums come out in '
            'another order (differences of ~1e-7 from an undisturbed run)', sim.num_lanes,
            restored.progress['num_lanes'])
    logging.info('Resuming from the checkpoint of round %d', restored.round)
  hp = sim.with_hp(rule.hyperparameters(rule_state) if rule else {})
  traffic = communication.Traffic(sim)
  if restored:
    traffic.replay(sim, restored.round, hp)
  accounts = ledgers(sim)
  if accounts:  # The noise is final here (calibrated, or restored): can adaptive clipping split it?
    final = jax.tree.map(np.asarray, sim.hp)
    for i in range(len(sim.runs)):
      privacy.check_split({k: float(v[i]) for k, v in final.items()}, sim.program.clients_per_round)
  if accounts:
    # Each distinct value once (a sweep's runs share most of them).
    logging.info('Privacy: after %d rounds epsilon %s at delta %s', c.num_rounds,
                 ', '.join(dict.fromkeys(f'{a.epsilon(c.num_rounds):.4g}' for a in accounts)),
                 ', '.join(dict.fromkeys(f'{a.delta:.3g}' for a in accounts)))
  for writer in writers:
    writer.start(restored.round if restored else None, evaluate_at)
  start, wall_before = time.perf_counter(), progress['wall_s']
  round_times = progress['round_times']
  eta = Eta(c, len(sim.runs), later_run_rounds)
  done = first - 1
  try:
    for r in range(first, c.num_rounds + 1):
      # A stop asked for while a library swallowed the interrupt; with several processes, a stop
      # asked of any of them.
      processes.check_stop()
      tick = time.perf_counter()
      stats = {}
      if r > 0:
        server, stats = sim.run_round(server, r, hp)
        stats = jax.tree.map(np.asarray, stats)  # Waits for the round to finish.
        _check_finite(~stats['finite'], r, labels, 'global model', _private(sim))
        for k in ('executed_steps', 'real_steps'):
          progress[k] += int(stats[k])
        traffic.add(stats['active_clients'])
        round_times.append(time.perf_counter() - tick)
      with signals.deferred():  # The round's record and checkpoint are written whole.
        if r in evaluate_at:
          metrics = _evaluate_and_write(sim, c.num_rounds, server.params, r, stats,
                                        np.asarray(hp['mu']), round_times, writers, labels, start,
                                        eta, accounts, traffic)
          if rule and enabled.any():  # Validation guarantees an evaluation every round.
            rule_state = rule.update(rule_state, metrics[rule.metric], enabled)
            hp = sim.with_hp(rule.hyperparameters(rule_state))
        progress['wall_s'] = wall_before + time.perf_counter() - start
        if checkpoints and r > 0 and checkpoints.due(r, last=r == c.num_rounds):
          for writer in writers:
            writer.sync()  # The records the checkpoint follows are on disk first.
          checkpoints.save(r, full_state(sim, server, rule_state), progress)
        done = r
      eta.lap()
  except KeyboardInterrupt:
    raise Interrupted(_interrupted_message(done, checkpoints)) from None
  return progress


def _check_finite(bad: np.ndarray,
                  r: int,
                  labels: Sequence[str],
                  what: str,
                  private: bool = False) -> None:
  """NonFiniteError for the first run whose `what` is NaN or inf (`bad` [R])."""
  runs = np.flatnonzero(bad)
  if runs.size:
    noise = ', or the noise (privacy.noise_multiplier, clip_norm)' if private else ''
    raise NonFiniteError(
        f'round {r}: the {what} of run {labels[runs[0]]} became non-finite (NaN/inf): lower '
        f'client.learning_rate or server.learning_rate (or algorithm.mu, client.weight_decay'
        f'{noise})')


def _interrupted_message(done: int, checkpoints: Checkpoints | None) -> str:
  when = f'after round {done}' if done >= 0 else 'before round 0'
  if checkpoints is None:
    return f'interrupted {when}; nothing was saved (no --workdir)'
  since = (f'from the checkpoint of round {checkpoints.last_saved}'
           if checkpoints.last_saved is not None else 'from round 0: no checkpoint yet')
  return f'interrupted {when}; rerun the same command to resume ({since})'


def _evaluate_and_write(sim: Simulation, num_rounds: int, params, r: int, stats: dict,
                        mu: np.ndarray, round_times: list[float], writers: Sequence[RunWriter],
                        labels: Sequence[str], start: float, eta: Eta,
                        accounts: list[privacy.Ledger] | None,
                        traffic: communication.Traffic) -> dict[str, np.ndarray]:
  """Evaluates every run's model, writes its record (with its bytes sent, and with DP its epsilon
  after r rounds, and its aggregation stages' stats) and logs a progress line with an ETA."""
  metrics = sim.evaluate(params, r)
  for name, values in metrics.items():  # A finite model can still have infinite logits.
    _check_finite(~np.isfinite(values), r, labels, name, _private(sim))
  elapsed = time.perf_counter() - start
  for i, writer in enumerate(writers):
    record = {'round': r, **{k: float(v[i]) for k, v in metrics.items()}, 'mu': float(mu[i])}
    if stats:
      record.update({
          'round/stragglers': int(stats['stragglers'][i]),
          'round/active_clients': int(stats['active_clients'][i]),
          'time/round_s': round_times[-1]
      })
      record.update({k: float(v[i]) for k, v in stats['aggregation'].items() if np.isfinite(v[i])})
    record.update(traffic.record(i))
    if accounts:
      record.update({
          'privacy/epsilon': accounts[i].epsilon(r),
          'privacy/delta': accounts[i].delta,
          'privacy/noise_multiplier': accounts[i].sigma
      })
    record['time/elapsed_s'] = elapsed
    writer.write(record)
  shown = ' '.join(f'{k} {float(np.mean(v)):.4f}' for k, v in metrics.items()
                   if k in ('train/loss', 'test/accuracy', 'local_test/accuracy'))
  if accounts:  # The largest finite epsilon (inf only where no run has noise).
    spent = [a.epsilon(r) for a in accounts]
    shown += f' privacy/epsilon {max([e for e in spent if np.isfinite(e)] or spent):.4g}'
  logging.info('round %d/%d  %s  %.4f s/round  ETA %s', r, num_rounds, shown, eta.per_round(),
               _format_eta(eta.seconds_left(r)))
  return metrics


def summarize(records: list[dict], progress: dict) -> dict:
  """summary.json: the last record, means over the last 10 rounds, the program's totals over all
  the rounds (in a sweep, those of all the runs it held together) and the partition."""
  last = records[-1]
  summary = {'final/' + k: v for k, v in last.items()}
  tail = [r for r in records if r['round'] > last['round'] - 10 and r['round'] > 0]
  for key in ('test/accuracy', 'local_test/accuracy', 'train/loss', 'local_test/accuracy_p10',
              'local_test/accuracy_std'):
    if tail and key in tail[0]:
      summary[f'last10/{key}'] = float(np.mean([r[key] for r in tail]))
  times = progress['round_times']
  summary['program'] = dict(executed_steps=progress['executed_steps'],
                            real_steps=progress['real_steps'],
                            wall_s=progress['wall_s'],
                            median_round_s=float(np.median(times)) if times else 0.0,
                            num_lanes=progress['num_lanes'],
                            real_work_share=progress['real_steps'] /
                            max(progress['executed_steps'], 1))
  summary['data'] = progress['data']
  return summary
