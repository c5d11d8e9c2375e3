"""Speed and memory of the default run, the default sweep and every algorithm, with a sequential
reference (`python -m fedprox_jax.benchmark`; measure.py and measure_lstm.py make the
measurements, settings.py holds the flags)."""
