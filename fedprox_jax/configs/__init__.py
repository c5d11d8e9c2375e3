"""The presets: experiment configs (this package) and sweep configs (sweeps/), each a module with
get_config(). The command lines take them by name from anywhere (--config=mnist_fedprox,
--config=synthetic:1_1, --sweep=mnist_figure); the repository's configs/ folder holds the same
presets as files, for --config=configs/mnist_fedprox.py and as examples to copy.
"""
import pathlib

_HERE = pathlib.Path(__file__).resolve().parent


def names(sweep: bool = False) -> list[str]:
  folder = _HERE / 'sweeps' if sweep else _HERE
  return sorted(
      p.stem for p in folder.glob('*.py') if not p.stem.startswith('_') and p.stem != 'comparison')


def resolve(spec: str, sweep: bool = False) -> str:
  """A config spec ('path[:argument]') as given, if its file exists; else the preset file of that
  name ('name[:argument]', or the file name of a missing 'configs/name.py'); else as given."""
  path, colon, argument = spec.partition(':')
  if pathlib.Path(path).is_file():
    return spec
  name = pathlib.Path(path).stem if path.endswith('.py') else path
  if name in names(sweep):
    return str((_HERE / 'sweeps' if sweep else _HERE) / f'{name}.py') + colon + argument
  return spec
