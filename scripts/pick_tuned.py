"""Each arm's best value in a tuning sweep of fedprox_jax/configs/sweeps/comparison.py's arms.

    python scripts/pick_tuned.py /tmp/algorithms_tune                       # MNIST: test accuracy
    python scripts/pick_tuned.py /tmp/synthetic_tune --metric=train/loss    # lower is better

Score of a value: its runs' mean of the metric over their last 10 rounds, averaged over seeds and
straggler settings. Prints every value's score and the chosen one per arm (for the CHOSEN table
of the report sweep's config).
"""
import argparse
import collections
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# pylint: disable=g-import-not-at-top
from fedprox_jax import plots
from fedprox_jax.configs.sweeps import comparison
from fedprox_jax.experiment import sweep_results

COLUMN = {field: column for column, field in sweep_results.COLUMNS.items()}


def column(field: str) -> str:
  """results.csv's column of a tuned field: a setting's, or an algorithm's own hyperparameter's
  (named after it)."""
  return COLUMN.get(field, field.removeprefix('algorithm.'))


def scores(rows: list[dict], metric: str) -> dict[str, dict[float, float]]:
  """arm -> {tuned value: score}."""
  by_run = collections.defaultdict(list)
  for row in rows:
    by_run[row['run']].append(row)
  values = collections.defaultdict(lambda: collections.defaultdict(list))
  for runs_rows in by_run.values():
    arm = runs_rows[0]['arm']
    value = float(f'{float(runs_rows[0][column(comparison.ARMS[arm][1])]):.6g}')  # float32 mu.
    final = max(int(r['round']) for r in runs_rows)
    values[arm][value].append(
        np.mean([float(r[metric]) for r in runs_rows if int(r['round']) > final - 10]))
  return {
      arm: {
          v: float(np.mean(s)) for v, s in sorted(by_value.items())
      } for arm, by_value in values.items()
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('directory', help='a tuning sweep directory (with results.csv)')
  parser.add_argument('--metric', default='test/accuracy', help='default: %(default)s')
  args = parser.parse_args()
  rows = plots.read_table(pathlib.Path(args.directory) / 'results.csv')
  lower_is_better = args.metric.endswith('loss')
  chosen = {}
  for arm, by_value in scores(rows, args.metric).items():
    pick = (min if lower_is_better else max)(by_value, key=by_value.get)
    chosen[arm] = pick
    shown = ', '.join(f'{v:g}: {s:.4f}' for v, s in by_value.items())
    print(f'{arm:12s} {comparison.ARMS[arm][1]:22s} {shown}  -> {pick:g}')
  print('CHOSEN =', {arm: chosen[arm] for arm in comparison.ARMS if arm in chosen})


if __name__ == '__main__':
  main()
