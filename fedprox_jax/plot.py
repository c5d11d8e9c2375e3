"""Command line: plots a sweep directory (its figure and table) or, with --run, one run.

    python -m fedprox_jax.plot SWEEP_DIR            # SWEEP_DIR/figure.png, figure.pdf, table.md
    python -m fedprox_jax.plot --run RUN_DIR        # RUN_DIR/metrics.png
    python -m fedprox_jax.plot SWEEP_DIR --x=comm/upload_bytes_total   # against the bytes sent
"""
import argparse
import pathlib
import sys

from fedprox_jax import plots


def _plot_sweep(directory: pathlib.Path,
                metrics: list[str] | None,
                x: str = 'round') -> list[pathlib.Path]:
  rows = plots.read_table(directory / 'results.csv')
  if metrics is None:  # The training loss and the accuracy the task has.
    metrics = [
        'train/loss', 'test/accuracy' if rows[0].get('test/accuracy') else 'local_test/accuracy'
    ]
  unknown = [m for m in metrics if m not in rows[0]]
  if unknown:
    known = [k for k in rows[0] if '/' in k and not k.startswith('time/')]
    raise ValueError(f'{directory / "results.csv"} has no metric {unknown[0]}: it has '
                     f'{", ".join(known)}')
  if x != 'round' and any(row.get(x, '') == '' for row in rows if row.get(metrics[0], '') != ''):
    raise ValueError(f'{directory / "results.csv"} has no {x} for every record to plot against '
                     '(older sweeps count no bytes: plot them against the round)')
  paths = plots.plot_sweep(str(directory), metrics=metrics, x=x)
  sections = [
      f'{m}, mean over the last 10 rounds; mean +- std over seeds\n\n'
      f'{plots.final_table(rows, m)}\n' for m in metrics
  ]
  (directory / 'table.md').write_text('\n'.join(sections))
  print('\n'.join(sections))
  return paths


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('directory', help='a sweep directory (with results.csv), or a run directory')
  parser.add_argument('--run', action='store_true', help='plot one run (metrics.jsonl)')
  parser.add_argument('--metrics',
                      default=None,
                      help='rows of the sweep figure and tables of table.md, comma-separated '
                      '(default: train/loss and test/accuracy, or local_test/accuracy where '
                      'there is no test set)')
  parser.add_argument('--x',
                      default='round',
                      help='what the curves are plotted against: round (default) or a metric, '
                      'e.g. comm/upload_bytes_total (in MB)')
  args = parser.parse_args()
  directory = pathlib.Path(args.directory)
  try:
    if args.run:
      if not (directory / 'metrics.jsonl').exists() and (directory / 'results.csv').exists():
        raise ValueError(f'{directory} is a sweep\'s directory: leave out --run')
      paths = [plots.plot_run(args.directory, x=args.x)]
    else:
      if not (directory / 'results.csv').exists() and (directory / 'metrics.jsonl').exists():
        raise ValueError(f'{directory} is a run\'s directory: add --run')
      paths = _plot_sweep(directory, args.metrics.split(',') if args.metrics else None, args.x)
  except (OSError, ValueError) as e:
    sys.exit(f'error: {" ".join(str(e).split())}')
  for path in paths:
    print(path)


if __name__ == '__main__':
  main()
