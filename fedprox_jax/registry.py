"""Finding the algorithms and tasks: every module of a package that defines the marker attribute
(ALGORITHM, TASK) of the right type contributes one, under its name."""
import importlib
import pkgutil


def discover(package: str, path, attribute: str, kind: type) -> dict:
  """{name: value} of `attribute` over the modules of `package` (at `path`), sorted by name."""
  found = {}
  for info in pkgutil.iter_modules(path):
    value = getattr(importlib.import_module(f'{package}.{info.name}'), attribute, None)
    if isinstance(value, kind):
      found[value.name] = value
  return dict(sorted(found.items()))
