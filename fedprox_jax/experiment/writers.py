"""A run's files: config.json, metrics.jsonl (one record per evaluated round), summary.json, and
TensorBoard scalars (tensorboardX writes event files without importing TensorFlow).

On resumption metrics.jsonl is checked against the checkpoint it resumes from: a partial last line
(a run killed while writing it) and the records of later rounds are dropped (they are computed
again), and a log that lacks records of earlier rounds is refused.
"""
import json
import logging
import math
import os
import pathlib

import ml_collections
import tensorboardX

from fedprox_jax.errors import LogError
from fedprox_jax.errors import WriteError
from fedprox_jax.files import write_atomically


def _jsonable(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _read_or_none(path: pathlib.Path) -> str | None:
  try:
    return path.read_text()
  except (OSError, UnicodeDecodeError):
    return None


def _ranges(rounds: list[int]) -> str:
  """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
  parts, start = [], None
  for i, r in enumerate(rounds):
    if start is None:
      start = r
    if i + 1 == len(rounds) or rounds[i + 1] != r + 1:
      parts.append(str(start) if start == r else f'{start}-{r}')
      start = None
  return ', '.join(parts)


def read_log(path: pathlib.Path, resumed_round: int, evaluated) -> tuple[list[dict], bool]:
  """The records of rounds <= resumed_round in the log at `path`, and whether the file needs
  rewriting (a partial last line, or records of later rounds, were dropped).

  `evaluated` (rounds.EvaluationRounds) says which rounds have records: each up to resumed_round
  must be there, and records of other rounds (the last round of a run since extended) are dropped.
  Rounds must increase.
  """
  fix = 'restore the file, or rerun with --overwrite to compute the run again from round 0'
  try:
    text = path.read_bytes().decode()
  except FileNotFoundError:
    text = ''
  except (OSError, UnicodeDecodeError) as e:
    raise LogError(f'{path} cannot be read ({e}): {fix}') from None
  lines = text.split('\n')
  partial = lines.pop()  # '' when the file ends with a newline, as every complete record does.
  if partial:
    logging.warning('%s: dropped a partial last line (the run was stopped while writing it)', path)
  records, changed = [], bool(partial)
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
      round_index = int(record['round'])
    except (ValueError, KeyError, TypeError, OverflowError) as e:
      raise LogError(f'{path} line {number} is not a metrics record ({e}): {fix}') from None
    if records and round_index <= records[-1]['round']:
      raise LogError(f'{path} line {number}: round {round_index} comes after round '
                     f'{records[-1]["round"]}: {fix}')
    if round_index > resumed_round or round_index not in evaluated:
      changed = True  # Computed again after the checkpoint, or not a record of this run.
      continue
    records.append(record)
  missing = sorted(evaluated.up_to(resumed_round) - {r['round'] for r in records})
  if missing:
    which = (f'records of rounds {_ranges(missing)}'
             if len(missing) > 1 else f'record of round {missing[0]}')
    raise LogError(f'{path} lacks the {which} (every record up to the checkpoint of round '
                   f'{resumed_round} must be there): {fix}')
  return records, changed


def last_round(path: pathlib.Path) -> int | None:
  """The highest round of the records in the log at `path` (lines that are not records are
  passed over); None for no record, or no file."""
  try:
    lines = path.read_bytes().decode(errors='replace').split('\n')
  except FileNotFoundError:
    return None
  except OSError as e:
    raise LogError(f'{path} cannot be read ({e.strerror}): make it readable, or rerun with '
                   '--overwrite to compute the run again from round 0') from None
  found = None
  for line in lines:
    try:
      round_index = int(json.loads(line)['round'])
    except (ValueError, KeyError, TypeError, OverflowError):
      continue
    found = round_index if found is None else max(found, round_index)
  return found


class RunWriter:
  """Writes one run's records as they come; `workdir=None` keeps them in memory only."""

  def __init__(self, workdir: str | None, config: ml_collections.ConfigDict):
    self.records: list[dict] = []
    self.dir = pathlib.Path(workdir) if workdir else None
    self._config = config
    self._metrics = self._tensorboard = None

  def _write_config(self) -> None:
    """config.json, once the run is known to go on: a refused command writes nothing."""
    self._guard(self.dir, lambda: self.dir.mkdir(parents=True, exist_ok=True))
    path = self.dir / 'config.json'
    text = self._config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
    if _read_or_none(path) != text:
      self._guard(path, lambda: write_atomically(path, text))

  def _refuse_unrestored(self, path: pathlib.Path) -> None:
    """A run that starts from round 0 must not write over records that a checkpoint followed:
    their checkpoints were lost or rejected, and starting over is for --overwrite to decide."""
    rounds = last_round(path)
    first_due = min(self._config.checkpoint_every, self._config.num_rounds)
    if rounds is not None and rounds > first_due:
      raise LogError(f'{path} holds records up to round {rounds}, but no checkpoint of the run '
                     f'was restored (the checkpoint of round {first_due} came before them): '
                     'restore the checkpoints, or rerun with --overwrite to compute the run again '
                     'from round 0')

  @staticmethod
  def _guard(path: pathlib.Path, write) -> None:
    try:
      write()
    except OSError as e:
      raise WriteError(f'{path} could not be written ({e.strerror}): free disk space or fix the '
                       'directory, then rerun the same command to resume') from None

  def resume(self, resumed_round: int, evaluated) -> None:
    """Loads the records up to `resumed_round` from metrics.jsonl (checking them), without
    opening the files for writing: enough for a finished run."""
    if self.dir:
      path = self.dir / 'metrics.jsonl'
      self.records, changed = read_log(path, resumed_round, evaluated)
      if changed:
        self._guard(
            path,
            lambda: write_atomically(path, ''.join(json.dumps(r) + '\n' for r in self.records)))

  def start(self, resumed_round: int | None, evaluated) -> None:
    """Opens the files: afresh, or keeping the records of rounds up to `resumed_round`, each of
    the `evaluated` rounds among them there (records of later rounds will be written again)."""
    if not self.dir:
      return
    path = self.dir / 'metrics.jsonl'
    if resumed_round is not None:
      self.resume(resumed_round, evaluated)
    else:
      self._refuse_unrestored(path)
    self._write_config()
    self._guard(
        path, lambda: setattr(self, '_metrics', open(path, 'a'
                                                     if resumed_round is not None else 'w')))
    self._tensorboard = tensorboardX.SummaryWriter(str(self.dir), flush_secs=10)

  def write(self, record: dict) -> None:
    self.records.append(record)
    if self.dir:
      line = json.dumps({k: _jsonable(v) for k, v in record.items()}) + '\n'
      self._guard(self.dir / 'metrics.jsonl', lambda:
                  (self._metrics.write(line), self._metrics.flush()))
      # One event per record rather than one per scalar: sweeps write dozens of runs a round.
      summary = tensorboardX.summary.Summary(value=[
          tensorboardX.summary.Summary.Value(tag=k, simple_value=v)
          for k, v in record.items()
          if k != 'round'
      ])
      self._tensorboard.file_writer.add_summary(summary, record['round'])

  def sync(self) -> None:
    """Makes the records written so far durable (before a checkpoint that follows them)."""
    if self._metrics:
      self._guard(self.dir / 'metrics.jsonl', lambda: os.fsync(self._metrics.fileno()))

  def abort(self) -> None:
    """Closes the files after a failure, quietly: the failure is what the user must read."""
    for handle in (self._metrics, self._tensorboard):
      try:
        if handle:
          handle.close()
      except Exception:  # pylint: disable=broad-except  # A full disk, say: already reported.
        pass
    self._metrics = self._tensorboard = None

  def close(self, summary: dict | None) -> None:
    """Closes the files; writes summary.json unless `summary` is None or the file already holds
    exactly it."""
    if self._metrics:
      self._metrics.close()
    if self._tensorboard:
      self._tensorboard.close()
    if self.dir and summary is not None:
      path = self.dir / 'summary.json'
      text = json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2) + '\n'
      if _read_or_none(path) != text:
        self._guard(path, lambda: write_atomically(path, text))
