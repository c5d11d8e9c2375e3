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

  def start(self, resumed_round: int | None) -> None:
    """Opens the files: afresh, or keeping the records of rounds up to `resumed_round` (those of
    later rounds came after the checkpoint and will be written again)."""
    if not self.dir:
      return
    path = self.dir / 'metrics.jsonl'
    if resumed_round is not None and path.exists():
      lines = [line for line in path.read_text().splitlines() if line.strip()]
      kept = [line for line in lines if json.loads(line)['round'] <= resumed_round]
      self.records = [json.loads(line) for line in kept]
      tmp = path.with_suffix('.tmp')
      tmp.write_text(''.join(line + '\n' for line in kept))
      tmp.replace(path)  # Atomic: a kill here leaves the old or the new file, never half.
    self._metrics = open(path, 'a' if resumed_round is not None else 'w')
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
