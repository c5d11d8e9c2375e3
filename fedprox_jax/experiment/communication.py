"""The compression group's validation, and the bytes each run sends: comm/upload_bytes (the round's
uploads, over the clients that uploaded: those aggregated), comm/download_bytes (the model, 32-bit,
and any server state the algorithm sends with it, to each of the K sampled clients) and their
totals since round 1, exact integers counted on the host (aggregation/encoding.py: no client's data
changes a count, only which clients uploaded).

A resumed run counts its earlier rounds again from their cohorts, drawn from the keys alone, so its
totals are those of an undisturbed run, whatever checkpoint it resumed from.
"""
import jax
import ml_collections
import numpy as np

from fedprox_jax.aggregation import encoding
from fedprox_jax.aggregation import quantization
from fedprox_jax.config_fields import require

BITS = (0, 1, 2, 4, 8, 16, quantization.EXACT_BITS)
# The hyperparameters a round's cohort is drawn with (engine/simulation.py): a resumed run draws
# its earlier rounds' cohorts again with today's values of them, which no round rule may move.
SAMPLING_HP = ('straggler_fraction', 'fixed_straggler_count', 'drop_stragglers', 'weighting')


def validate(c: ml_collections.ConfigDict) -> None:
  """Refuses a config's compression group where it is invalid (ConfigError naming the field)."""
  require(
      'compression' in c, 'compression', 'is missing: the config must hold the compression group '
      '(build it on a preset, whose compression.bits = 0 and topk = 1 keep it off)')
  g = c.compression
  require(
      isinstance(g.bits, int) and not isinstance(g.bits, bool) and g.bits in BITS,
      'compression.bits', f'= {g.bits!r} must be one of {", ".join(map(str, BITS))} (bits per '
      'value; 0: off, 32: float32 as it is)')
  require(
      isinstance(g.topk, (int, float)) and not isinstance(g.topk, bool) and 0 < g.topk <= 1,
      'compression.topk', f'= {g.topk!r} must be in (0, 1] (the fraction of each tensor kept; 1: '
      'all)')
  require(isinstance(g.error_feedback, bool), 'compression.error_feedback',
          f'= {g.error_feedback!r} must be True or False')
  require(
      not g.error_feedback or g.bits > 0 or g.topk < 1, 'compression.error_feedback',
      '= True needs compression (compression.bits > 0 or compression.topk < 1): uncompressed '
      'uploads leave nothing to feed back')


class Traffic:
  """Each run's bytes per client, and its totals so far."""

  def __init__(self, sim):
    sizes = [int(np.prod(a.shape)) for a in jax.tree.leaves(sim.cost.upload_shape)]
    self.upload_per_client = np.array([
        encoding.upload_bytes(sizes, int(run.hp.get('bits', 0)), run.hp.get('topk', 1.0))
        for run in sim.runs
    ], np.int64)
    num_runs = len(sim.runs)
    sent = [sim.initial_server.params
           ] + [sim.initial_server.algorithm[name] for name in sim.algorithm.downloads]
    per_run = sum(a.size // num_runs * a.dtype.itemsize for a in jax.tree.leaves(sent))
    self.download_per_client = np.full(num_runs, per_run, np.int64)
    self.clients_per_round = sim.program.clients_per_round
    self.upload_total = np.zeros(num_runs, np.int64)
    self.download_total = np.zeros(num_runs, np.int64)
    self.last = self._round(np.zeros(num_runs, np.int64), 0)

  def _round(self, uploaded: np.ndarray, sampled: int) -> dict:
    return {
        'comm/upload_bytes': self.upload_per_client * uploaded,
        'comm/download_bytes': self.download_per_client * sampled,
    }

  def add(self, uploaded) -> None:
    """Counts a round in which `uploaded` [R] clients of each run uploaded."""
    self.last = self._round(np.asarray(uploaded, np.int64), self.clients_per_round)
    self.upload_total += self.last['comm/upload_bytes']
    self.download_total += self.last['comm/download_bytes']

  def replay(self, sim, last_round: int, hp) -> None:
    """Counts rounds 1..last_round again from their cohorts (a resumed run)."""
    rule = sim.algorithm.round_rule
    moved = rule and set(SAMPLING_HP) & set(
        rule.hyperparameters(rule.initial(jax.tree.map(np.asarray, sim.hp))))
    if moved:  # (None does today: FedProx's adaptive mu moves mu alone.)
      raise RuntimeError(f'the round rule moves {sorted(moved)}, which the cohorts are drawn with: '
                         'the earlier rounds\' bytes cannot be counted again on resumption')
    for r in range(1, last_round + 1):
      self.add(np.asarray((sim.sample(r, hp).weights > 0).sum(1)))

  def record(self, i: int) -> dict:
    """Run i's entries of a record: the last round's bytes and the totals since round 1."""
    return {
        'comm/upload_bytes': int(self.last['comm/upload_bytes'][i]),
        'comm/upload_bytes_total': int(self.upload_total[i]),
        'comm/download_bytes': int(self.last['comm/download_bytes'][i]),
        'comm/download_bytes_total': int(self.download_total[i]),
    }
