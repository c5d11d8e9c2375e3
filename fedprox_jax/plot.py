"""Command line: plots a sweep directory (its figure and table) or, with --run, one run.

    python -m fedprox_jax.plot SWEEP_DIR            # SWEEP_DIR/figure.png, figure.pdf, table.md
    python -m fedprox_jax.plot --run RUN_DIR        # RUN_DIR/metrics.png
"""
import argparse
import pathlib
import sys

from fedprox_jax import plots


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('directory', help='a sweep directory (with results.csv), or a run directory')
  parser.add_argument('--run', action='store_true', help='plot one run (metrics.jsonl)')
  parser.add_argument('--metrics',
                      default='train/loss,test/accuracy',
                      help='rows of the sweep figure (default: %(default)s)')
  args = parser.parse_args()
  try:
    if args.run:
      paths = [plots.plot_run(args.directory)]
    else:
      paths = plots.plot_sweep(args.directory, metrics=args.metrics.split(','))
      rows = plots.read_table(pathlib.Path(args.directory) / 'results.csv')
      metric = 'test/accuracy' if rows and rows[0].get('test/accuracy') else 'local_test/accuracy'
      table = plots.final_table(rows, metric)
      (pathlib.Path(args.directory) / 'table.md'
      ).write_text(f'{metric}, mean over the last 10 rounds; mean +- std over seeds\n\n{table}\n')
      print(table)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')
  for path in paths:
    print(path)


if __name__ == '__main__':
  main()
