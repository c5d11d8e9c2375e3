"""README.md and docs/*.md name only presets, config fields, files and links that exist; the field
tables of docs/configuration.md cover the default config; the README's test commands are the ones
.ci/run runs. Each check returns its problems, so the tests below also feed it broken text."""
import functools
import importlib.util
import pathlib
import re
import shlex

import pytest

from fedprox_jax import algorithms
from fedprox_jax import config_fields
from fedprox_jax import configs as presets
from tests.conftest import REPO

README_MAX_LINES = 200
PATH_ROOTS = ('fedprox_jax/', 'configs/', 'scripts/', 'docs/', 'tests/', '.ci/')
PATH = re.compile(r'(?<![\w./~-])((?:fedprox_jax|configs|scripts|docs|tests|\.ci)/[\w./-]*)')
SPEC = re.compile(r'(?<![\w-])--(config|sweep)=([^\s`\'"),|]+)')
FLAG_FIELD = re.compile(r'(?<![\w.-])(?:--)?(config|sweep)\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)')
SPAN_FIELD = re.compile(r'^(?:config\.)?([a-z_]+(?:\.[a-z_0-9]+)+)(?:\s*=.*)?$')
FILE_SUFFIXES = ('.py', '.md', '.png', '.json', '.jsonl', '.txt', '.gz', '.csv', '.npz', '.pdf')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
PLACEHOLDER = re.compile(r'[A-Z]{3,}')  # NAME, ROUND: a file to be made, or one of many.
# The configuration.md sections whose field tables describe a preset other than the default.
TABLE_PRESETS = {'Synthetic': 'synthetic', 'Shakespeare': 'shakespeare'}


def documents() -> dict[pathlib.Path, str]:
  return {p: p.read_text() for p in [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]}


def fenced(text: str) -> tuple[list[str], str]:
  """The fenced code blocks' lines, and the text outside them."""
  parts = re.split(r'^```.*$', text, flags=re.M)
  return [line for block in parts[1::2] for line in block.split('\n')], '\n'.join(parts[::2])


def commands(text: str) -> list[list[str]]:
  """Command lines shown in code blocks (continuations joined) and inline, as tokens."""
  lines, prose = fenced(text)
  joined = re.sub(r'\\\n\s*', ' ', '\n'.join(lines)).split('\n')
  joined += re.findall(r'`((?:python|srun) [^`]+)`', prose)
  out = []
  for line in joined:
    line = line.strip().removeprefix('$ ')
    if re.match(r'(python|srun|pip|tensorboard) ', line):
      out.append(shlex.split(line, comments=True))
  return out


@functools.cache
def load(spec: str, sweep: bool = False):
  """The config of a --config (or --sweep) spec: a file's path from the repository, or a preset."""
  path, _, argument = spec.partition(':')
  file = REPO / path if (REPO / path).is_file() else pathlib.Path(
      presets.resolve(spec, sweep).partition(':')[0])
  module_spec = importlib.util.spec_from_file_location(f'doc_config_{file.stem}', file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


@functools.cache
def fields(spec: str, sweep: bool = False) -> frozenset[str]:
  """Leaf fields of a config and the groups above them (a sweep's arms and grids are its values)."""
  config = load(spec, sweep)
  leaves = set(config) if sweep else set(config_fields.flatten(config))
  groups = {f.rsplit('.', i)[0] for f in leaves for i in range(1, f.count('.') + 1)}
  return frozenset(leaves | groups)


def all_fields() -> frozenset[str]:
  specs = [*presets.names(), 'synthetic:large', 'shakespeare:cpu']
  return frozenset().union(*(fields(s) for s in specs))


def sweep_fields() -> frozenset[str]:
  return frozenset().union(*(fields(s, sweep=True) for s in presets.names(sweep=True)))


def preset_problems(docs: dict) -> list[str]:
  """Every --config=SPEC and --sweep=SPEC names a preset or file that loads."""
  problems = []
  for path, text in docs.items():
    for kind, spec in SPEC.findall(text):
      name = spec.partition(':')[0]
      is_path = '/' in name or name.endswith('.py')
      if not is_path and name not in presets.names(kind == 'sweep'):
        problems.append(f'{path.name}: --{kind}={spec} is no preset')
        continue
      try:
        load(spec, kind == 'sweep')
      except Exception as e:  # pylint: disable=broad-except  # A config file may raise anything.
        problems.append(f'{path.name}: --{kind}={spec} does not load ({e!r})')
  return problems


def field_problems(docs: dict) -> list[str]:
  """Every field named exists: a command's in its own preset, the others in some preset."""
  problems, known, sweeps = [], all_fields(), sweep_fields()
  for path, text in docs.items():
    for tokens in commands(text):
      specs = dict(SPEC.findall(' '.join(tokens)))
      for token in tokens:
        match = re.match(r'--(config|sweep)\.([\w.]+)=', token)
        default = 'mnist_figure' if match and match[1] == 'sweep' else 'mnist_fedprox'
        if match and match[2] not in fields(specs.get(match[1], default), match[1] == 'sweep'):
          problems.append(f'{path.name}: {token} is no field of {specs.get(match[1], default)}')
    for kind, field in FLAG_FIELD.findall(text):
      is_file = f'.{field.rpartition(".")[2]}' in FILE_SUFFIXES  # config.json, sweep.py
      if field not in (sweeps if kind == 'sweep' else known) and not is_file:
        problems.append(f'{path.name}: {kind}.{field} is no field of any preset')
    for span in re.findall(r'`([^`\n]+)`', text):
      match = SPAN_FIELD.match(span)
      group = match and match[1].split('.')[0]
      if not match or match[1].endswith(FILE_SUFFIXES) or not (group in known or group == 'sweep'):
        continue
      field = match[1].removeprefix('sweep.') if group == 'sweep' else match[1]
      if field not in (sweeps if group == 'sweep' else known):
        problems.append(f'{path.name}: `{span}` names no field of any preset')
  return problems


def path_problems(docs: dict) -> list[str]:
  """Every repository path exists (one with a placeholder such as NAME: its folder); every
  backticked bare module name is a file of the repository."""
  problems = []
  modules = {p.name for p in REPO.glob('**/*.py') if 'build' not in p.parts}
  for path, text in docs.items():
    for name in PATH.findall(text):
      name = name.rstrip('.').partition(':')[0]
      target = REPO / name
      if PLACEHOLDER.search(name):
        target = REPO / name[:PLACEHOLDER.search(name).start()].rpartition('/')[0]
      if not target.exists():
        problems.append(f'{path.name}: {name} does not exist')
    for span in re.findall(r'`([\w]+\.py)`', text):
      if span not in modules:
        problems.append(f'{path.name}: `{span}` is no file of the repository')
  return problems


def slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def link_problems(docs: dict) -> list[str]:
  """Every relative link (and its #anchor) resolves."""
  problems = []
  for path, text in docs.items():
    for target in LINK.findall(text):
      if re.match(r'[a-z]+:', target):
        continue
      file, _, anchor = target.partition('#')
      resolved = (path.parent / file).resolve() if file else path
      if not resolved.exists():
        problems.append(f'{path.name}: link {target} leads nowhere')
      elif anchor and resolved.suffix == '.md':
        headings = re.findall(r'^#+ (.+)$', fenced(resolved.read_text())[1], flags=re.M)
        if anchor not in {slug(h) for h in headings}:
          problems.append(f'{path.name}: link {target}: {file or path.name} has no such heading')
  return problems


def field_tables(text: str) -> dict[str, set[str]]:
  """The first column's fields of each 'field' table, by the preset its section describes."""
  tables, section, in_table = {}, 'mnist_fedprox', False
  for line in text.split('\n'):
    if line.startswith('## '):
      section = next((p for key, p in TABLE_PRESETS.items() if key in line), 'mnist_fedprox')
      section = 'sweep' if 'Sweep' in line else section
    in_table = line.startswith('| field |') or (in_table and line.startswith('|'))
    if in_table and not line.startswith(('| field |', '|---')):
      names = re.findall(r'`([^`]+)`', line.split('|')[1])
      tables.setdefault(section, set()).update(names)
  return tables


def table_problems(text: str) -> list[str]:
  """The tables name existing fields only, and cover the default config and every field that a
  task's preset adds."""
  problems, default = [], set(config_fields.flatten(load('mnist_fedprox')))
  for section, names in field_tables(text).items():
    if section == 'sweep':
      known = {f'sweep.{f}' for f in sweep_fields()}
      required = {f'sweep.{f}' for f in load('mnist_figure', sweep=True)}
    else:
      known = set(config_fields.flatten(load(section)))
      required = default if section == 'mnist_fedprox' else known - default
    problems += [f'{section} table: {n} is no field' for n in sorted(names - known)]
    problems += [f'{section} table lacks {n}' for n in sorted(required - names)]
  if 'mnist_fedprox' not in field_tables(text):
    problems.append('no table of the default config\'s fields')
  return problems


def declaration_problems(text: str, declared: dict) -> list[str]:
  """Each algorithm's own hyperparameter has its row: `algorithm.NAME`, its default, and a text
  that begins with its declaration's doc (algorithms/base.Hyperparameter)."""
  rows = {}
  for line in text.split('\n'):
    cells = [c.strip() for c in line.split('|')[1:-1]]
    if len(cells) >= 3 and re.fullmatch(r'`algorithm\.\w+`', cells[0]):
      rows[cells[0].strip('`')] = cells
  problems = []
  for name, h in declared.items():
    cells = rows.get(f'algorithm.{name}')
    shown = f'`{h.default}`' if isinstance(h.default, str) else str(h.default)
    if cells is None:
      problems.append(f'no row of algorithm.{name}')
    elif cells[1] != shown:
      problems.append(f'algorithm.{name}: the row says {cells[1]}, the declaration {shown}')
    elif not cells[2].startswith(h.doc):
      problems.append(f'algorithm.{name}: the row\'s text does not begin with {h.doc!r}')
  return problems


def ci_command_problems(readme: str, ci: str) -> list[str]:
  """The README's pytest commands: .ci/run's, and that with -m "not slow" (and no -n): the fast
  tier."""
  ci_runs = [c for c in commands(f'```\n{ci}\n```') if c[:3] == ['python', '-m', 'pytest']]
  shown = [c for c in commands(readme) if c[:3] == ['python', '-m', 'pytest']]
  problems = [f'README lacks .ci/run\'s {" ".join(c)}' for c in ci_runs if c not in shown]
  for command in shown:
    fast = [[*c[:3], *(t for i, t in enumerate(c[3:], 3) if c[i - 1] != '-n' and t != '-n')
            ] for c in ci_runs]
    if command not in ci_runs and not any(command == [*f[:4], '-m', 'not slow', *f[4:]]
                                          for f in fast):
      problems.append(f'README shows {" ".join(command)}, which .ci/run does not run')
  return problems


def workdir_problems(docs: dict) -> list[str]:
  """No two commands share a workdir (the second would be refused as another config's)."""
  seen, problems = {}, []
  for path, text in docs.items():
    for tokens in commands(text):
      for token in tokens:
        workdir = token.removeprefix('--workdir=') if token.startswith('--workdir=') else ''
        if workdir and workdir in seen:
          problems.append(f'{path.name}: --workdir={workdir} is also used in {seen[workdir]}')
        seen.setdefault(workdir, path.name)
  return problems


DOCS = documents()
BROKEN = pathlib.Path(REPO / 'docs' / 'broken.md')


@pytest.mark.parametrize(
    'check', [preset_problems, field_problems, path_problems, link_problems, workdir_problems])
def test_the_docs_pass(check):
  assert check(DOCS) == []


def test_the_field_tables_cover_the_configs():
  assert table_problems((REPO / 'docs' / 'configuration.md').read_text()) == []


def test_the_algorithms_fields_rows_are_their_declarations():
  text = (REPO / 'docs' / 'configuration.md').read_text()
  declared = algorithms.declarations()
  assert declaration_problems(text, declared) == []
  adaptive = declared['adaptive_mu']
  assert declaration_problems(
      text.replace('| `algorithm.adaptive_mu` | False |', '| `algorithm.adaptive_mu` | True |'),
      declared) == ['algorithm.adaptive_mu: the row says True, the '
                    'declaration False']
  assert declaration_problems(text.replace(adaptive.doc, 'Something else'), declared) == [
      f'algorithm.adaptive_mu: the row\'s text does not begin with {adaptive.doc!r}'
  ]


def test_the_readme_shows_cis_test_commands_and_is_short():
  assert ci_command_problems(DOCS[REPO / 'README.md'], (REPO / '.ci' / 'run').read_text()) == []
  assert 'slow:' in (REPO / 'pyproject.toml').read_text()  # The marker the fast tier leaves out.
  assert len(DOCS[REPO / 'README.md'].split('\n')) <= README_MAX_LINES


@pytest.mark.parametrize('check, text', [
    (preset_problems, '`--config=mnist_fedprx`'),
    (preset_problems, '`--sweep=mnist_figure:2`'),
    (preset_problems, '`--config=configs/nope.py`'),
    (field_problems,
     '```\npython -m fedprox_jax.run --config=synthetic --config.data.pool=all\n```'),
    (field_problems, 'set `--config.algorithm.muu=1`'),
    (field_problems, '`algorithm.muu`'),
    (field_problems, '`sweep.repeat`'),
    (path_problems, 'see `fedprox_jax/engine/nope.py`'),
    (path_problems, 'see `fedprox_jax/nowhere/NAME.py`'),
    (path_problems, 'see `nope_module.py`'),
    (link_problems, '[x](nope.md)'),
    (link_problems, '[x](usage.md#no-such-heading)'),
    (workdir_problems, '```sh\npython -m fedprox_jax.run --workdir=/tmp/a\n'
     'python -m fedprox_jax.sweep --workdir=/tmp/a\n```'),
])
def test_each_check_finds_what_it_names(check, text):
  assert check({BROKEN: text})


def test_the_table_and_command_checks_find_what_they_name():
  text = (REPO / 'docs' / 'configuration.md').read_text()
  assert table_problems(text.replace('| `num_rounds` |', '| `num_round` |')) == [
      'mnist_fedprox table: num_round is no field', 'mnist_fedprox table lacks num_rounds'
  ]
  assert table_problems(text.replace('`data.max_windows`', '`data.windows`'))
  ci = (REPO / '.ci' / 'run').read_text()
  readme = DOCS[REPO / 'README.md']
  assert ci_command_problems(readme.replace('-n 2 tests', '-n 3 tests'), ci)
  assert ci_command_problems(readme.replace('"not slow"', '"not fast"'), ci)
