"""The same as python -m fedprox_jax.plot, from a checkout (kept for the commands that use it).

    python scripts/plot.py SWEEP_DIR            # SWEEP_DIR/figure.png, figure.pdf, table.md
    python scripts/plot.py --run RUN_DIR        # RUN_DIR/metrics.png
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fedprox_jax import plot  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  plot.main()
