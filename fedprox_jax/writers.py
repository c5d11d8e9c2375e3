"""A run's files: config.json, metrics.jsonl (one record per evaluated round), summary.json, and
TensorBoard scalars (tensorboardX writes event files without importing TensorFlow)."""
import json
import math
import pathlib

import ml_collections
import tensorboardX


def _jsonable(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class RunWriter:
  """Writes one run's records as they come; `workdir=None` keeps them in memory only."""

  def __init__(self, workdir: str | None, config: ml_collections.ConfigDict):
    self.records: list[dict] = []
    self.dir = pathlib.Path(workdir) if workdir else None
    if self.dir:
      self.dir.mkdir(parents=True, exist_ok=True)
      (self.dir / 'config.json').write_text(config.to_json_best_effort(indent=2, sort_keys=True))
      self._metrics = open(self.dir / 'metrics.jsonl', 'w')
      self._tensorboard = tensorboardX.SummaryWriter(str(self.dir), flush_secs=10)

  def write(self, record: dict) -> None:
    self.records.append(record)
    if self.dir:
      self._metrics.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + '\n')
      self._metrics.flush()
      # One event per record rather than one per scalar: sweeps write dozens of runs a round.
      summary = tensorboardX.summary.Summary(value=[
          tensorboardX.summary.Summary.Value(tag=k, simple_value=v)
          for k, v in record.items() if k != 'round'])
      self._tensorboard.file_writer.add_summary(summary, record['round'])

  def close(self, summary: dict) -> None:
    if self.dir:
      self._metrics.close()
      self._tensorboard.close()
      text = json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2)
      (self.dir / 'summary.json').write_text(text + '\n')
