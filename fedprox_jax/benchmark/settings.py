"""The benchmark's flags (python -m fedprox_jax.benchmark --help).

Each measurement runs in a child process (`python -m fedprox_jax.benchmark --child=...`): it gets
every flag defined here as the parent has it (child_flags), so a flag added here cannot be left
out; only the measurement and its compilation cache are the child's own. Define the benchmark's
flags here and nowhere else (tests/benchmark_flags_test.py holds the package to it).
"""
from absl import flags

OUT = flags.DEFINE_string('out', 'benchmark.json', 'Where the JSON results go.')
ROUNDS = flags.DEFINE_integer('rounds', 100, 'Rounds of the full runs.')
REFERENCE_ROUNDS = flags.DEFINE_integer('reference_rounds', 10, 'Rounds timed side by side.')
ALGORITHM_ROUNDS = flags.DEFINE_integer('algorithm_rounds', 100,
                                        'Training rounds timed per algorithm.')
SWEEP = flags.DEFINE_string('sweep', 'configs/sweeps/mnist_figure.py', 'Sweep config file.')
COHORTS = flags.DEFINE_list('cohorts', [], 'Clients per round at which to time the CNN.')
COHORT_ROUNDS = flags.DEFINE_integer('cohort_rounds', 5, 'Training rounds timed per cohort size.')
ONLY_COHORTS = flags.DEFINE_bool('only_cohorts', False, 'Time only the CNN cohorts.')
ONLY_ALGORITHMS = flags.DEFINE_bool('only_algorithms', False,
                                    "Time only every algorithm's training round.")
LSTM = flags.DEFINE_bool('lstm', True, 'Time the Shakespeare task (reads its texts).')
ONLY_LSTM = flags.DEFINE_bool('only_lstm', False, 'Time only the Shakespeare task.')
LSTM_ROUNDS = flags.DEFINE_integer('lstm_rounds', 5, 'Training rounds of the LSTM timed.')
LSTM_REFERENCE_ROUNDS = flags.DEFINE_integer('lstm_reference_rounds', 3,
                                             'LSTM rounds timed against the reference.')
PAPER_STEPS = flags.DEFINE_integer('paper_steps', 20, "Steps of the paper's LSTM timed.")
PROCESSES = flags.DEFINE_bool('processes', True,
                              'Time the default run over 2 processes against 1 (2 devices each).')
ONLY_PROCESSES = flags.DEFINE_bool('only_processes', False, 'Time only the 2-process run.')
REPEATS = flags.DEFINE_integer('repeats', 3, 'Times the default run is measured (cold, cached).')
SWEEP_REPEATS = flags.DEFINE_integer('sweep_repeats', 1, 'Times the default sweep is measured.')
POPULATIONS = flags.DEFINE_list(
    'populations', ['1000', '10000', '100000', '1000000'],
    'Devices of configs/synthetic.py:large timed (--only_populations).')
POPULATION_ROUNDS = flags.DEFINE_integer('population_rounds', 20,
                                         'Rounds timed per population, with and without eval.')
ONLY_POPULATIONS = flags.DEFINE_bool('only_populations', False,
                                     'Time only the populations (also run by default).')
CHILD = flags.DEFINE_string('child', None, 'Internal: the measurement this process makes.')
CACHE = flags.DEFINE_string('compilation_cache', '', 'Internal: the compilation cache to use.')

# The flags each child gets of its own (child_flags' arguments) in place of the parent's values.
PER_CHILD = (CHILD.name, CACHE.name)


def child_flags(measurement: str,
                cache: str,
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """The command-line flags of the child process that makes `measurement` with the compilation
  cache `cache`: every other flag of this module as `flag_values` holds it."""
  forwarded = []
  for flag in flag_values.get_flags_for_module(__name__):
    if flag.name in PER_CHILD:
      continue
    text = flag.serialize()  # '' for a flag left at None (only a default can be None).
    forwarded += text.split('\n') if isinstance(flag, flags.MultiFlag) else [text]
  return [*(f for f in forwarded if f), f'--{CHILD.name}={measurement}', f'--{CACHE.name}={cache}']
