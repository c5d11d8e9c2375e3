"""Finding the algorithms and tasks: every module of a package that defines the marker attribute
(ALGORITHM, TASK) of the right type contributes one, under its name."""
import importlib
import pkgutil


def discover(package: str, path, attribute: str, kind: type) -> dict:
  """{name: value} of `attribute` over the modules of `package` (at `path`), sorted by name."""
  found, where = {}, {}
  for info in pkgutil.iter_modules(path):
    module = f'{package}.{info.name}'
    value = getattr(importlib.import_module(module), attribute, None)
    if value is None:
      continue  # A helper module: it defines no `attribute`.
    if not isinstance(value, kind):
      raise TypeError(f'{module}.{attribute} is a {type(value).__name__}, not a {kind.__name__}: '
                      f'define it as {kind.__name__}(...), or rename it if it is no {attribute}')
    if value.name in found:
      raise ValueError(f'{module}.{attribute} and {where[value.name]}.{attribute} are both named '
                       f'{value.name!r}: give each its own name')
    found[value.name], where[value.name] = value, module
  return dict(sorted(found.items()))
