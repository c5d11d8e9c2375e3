"""Who says what in one play of the Gutenberg etexts; the rule is in shakespeare_text.parse_play.

The layout, as found: the list of persons, then acts and scenes. A block (lines between blank
lines) that opens with a speaker's name line starts a speech; blocks after it that open with no
name line (after a stage direction, a song's title) continue it, until the next name line or
heading. Stage directions are in [...], sometimes nested, sometimes opened with '{' or closed with
'}' by a typo, sometimes never closed.
"""
import collections
from collections.abc import Callable
import re

# Two name lines of one name in a play make it a name: no speech line in the 37 plays opens two
# blocks with the same name-shaped text, while many small roles (Hamlet's 'Both.', 'Capt.' in
# King Lear) speak exactly twice and are neither in capitals nor in the list of persons.
MIN_NAME_LINES = 2

_HEADING = re.compile(r'(ACT|Act|SCENE|Scene)\s+([IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b')
_FRAME = re.compile(r'(THE )?(PROLOGUE|EPILOGUE|INDUCTION)\.?')  # Alone in its block: a heading.
_END = 'THE END'
_WORD = r"(?:[A-Za-z][A-Za-z'-]*|\d|&[A-Za-z]*)\.?"
# Up to five words ('Ham.', 'SECOND VARRO'S SERVANT.', 'Ros. and Guil.', '2 KEEPER.', 'GREY,
# SCROOP.'), then maybe a stage direction, or a stray ']' ('FIRST KNIGHT.]' in Pericles).
_NAME_LINE = re.compile(rf'(?P<name>{_WORD}(?:,?\s+{_WORD}){{0,4}})(?:--)?\s*(?P<rest>[\[{{\]].*)?')
# A song's title, a stanza's number, a dumb show (Pericles): not spoken, nor a speaker.
_LABEL = re.compile(r'(SONG|Song|DUMB SHOW|[IVX]+)\.?')
_ENTRANCE = re.compile(r'[\[{]\s*(?:Re-enter|Enter)\b([^\[\]{}]*)')
_JOINERS = frozenset(['AND', 'OF', 'THE'])  # 'Hor. and Mar.', 'GHOST OF RIVERS'
_ORDINALS = frozenset('I II III IV FIRST SECOND THIRD FOURTH FIFTH SIXTH'.split())  # And digits.


def _blocks(lines: list[str]) -> list[list[str]]:
  """Runs of non-blank lines, stripped, up to 'THE END'."""
  out = [[]]
  for line in lines:
    if line.strip() == _END:
      break
    if line.strip():
      out[-1].append(line.strip())
    elif out[-1]:
      out.append([])
  return [block for block in out if block]


def _without_directions(lines: list[str]) -> list[str]:
  """Lines of one block with stage directions removed; a direction never outlives its block."""
  out, depth = [], 0
  for line in lines:
    kept = []
    for ch in line:
      if ch in '[{':
        depth += 1
      elif ch in ']}' and depth:
        depth -= 1
      elif ch in ']}':  # Its '[' was lost above a blank line: all before it was direction too.
        out, kept = [], []
      elif not depth:
        kept.append(ch)
    out.append(' '.join(''.join(kept).split()))
  return [line for line in out if line and not _LABEL.fullmatch(line)]


def _normalise(name: str) -> str:
  name = re.sub(r'&[Cc]\.?', ' ', name)  # 'FALS, GADS., &C.': '&c.' is 'and the others'.
  return ' '.join(re.sub('[.,]', ' ', name.upper().replace('&', ' AND ')).split())


def _named(name: str) -> list[str]:
  """The words of `name` that name someone: not 'and', 'of', 'the', nor an ordinal."""
  words = re.sub('[.,]', ' ', name.replace('&', ' and ')).split()
  return [w for w in words if w.upper() not in _JOINERS | _ORDINALS and not w.isdigit()]


def _capitalised(text: str) -> frozenset[str]:
  return frozenset(w.upper() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text) if w[0].isupper())


def _entering(play: str) -> frozenset[str]:
  """Names in entrances ('[Enter Lucianus.]'), up to the first stop: then come the actions."""
  return _capitalised(' '.join(re.split('[.;:]', e)[0] for e in _ENTRANCE.findall(play)))


def _is_known(name: str, known: frozenset[str]) -> bool:
  """Every word of `name` is capitalised and starts a known word (an ordinal or joiner aside)."""
  named = _named(name)
  return bool(named) and all(
      len(w) > 1 and w[0].isupper() and any(k.startswith(w.upper()) for k in known) for w in named)


def _in_capitals(name: str) -> bool:
  """'SECOND LORD.', 'M. JOURDAIN.', 'SENATORS and PATRICIANS.'; not 'II.', 'THE ORDER OF...'."""
  named = _named(name)
  return (name.split()[0].upper() != 'THE' and all(w.isupper() for w in named) and
          any(len(w) > 1 and not re.fullmatch('[IVXL]+', w) for w in named))


def _spelled_out(word: str, known: frozenset[str]) -> str | None:
  """The one known word that `word` abbreviates ('HAM': 'HAMLET', not 'HAMLET'S'), or None."""
  fits = sorted((k for k in known if k.startswith(word) and k != word + 'S'), key=len)
  if word in known or not fits or not all(k.startswith(fits[0]) for k in fits):
    return None
  return fits[0]


def _full_name(name: str, listed: frozenset[str], entering: frozenset[str]) -> str:
  """The normalised name, each abbreviated word spelled out from the list of persons, else from
  the entrances, where only one word fits ('Guil.', 'Guild.': 'GUILDENSTERN'; 'Cor.' stays
  'COR' in King Lear, where Cordelia and Cornwall both fit)."""
  words = []
  for word in _normalise(name).split():
    full = None if word in _JOINERS | _ORDINALS else (_spelled_out(word, listed) or
                                                      _spelled_out(word, entering))
    words.append(full or word)
  return ' '.join(words)


def _is_heading(block: list[str]) -> bool:
  # MND's 'PROLOGUE' heads a speech in its block; a prologue's heading stands alone.
  return bool(_HEADING.match(block[0]) or (len(block) == 1 and _FRAME.fullmatch(block[0])))


def _is_title(line: str) -> bool:
  """A line in capitals that names no one ('THE ORDER OF THE CORONATION.'), not a label."""
  return line.isupper() and line[0] not in '[{' and not _LABEL.fullmatch(line)


def _name_line(line: str) -> re.Match | None:
  """`line` split into name and direction when it is shaped as a name line: capitalised words
  but for 'and', 'of', 'the' ('Come hither, sir.' is not)."""
  match = _NAME_LINE.fullmatch(line)
  words = match and re.sub('[.,&]', ' ', match['name']).split()
  if not words or _LABEL.fullmatch(line):
    return None
  return match if all(
      w[0].isupper() or w.isdigit() or w.upper() in _JOINERS for w in words) else None


def _name_lines(blocks: list[list[str]]) -> list[re.Match | None]:
  """The name-shaped first line of each block; None for headings, labels and the rest."""
  return [None if _is_heading(b) else _name_line(b[0]) for b in blocks]


def _speaker_rule(names: list[str], known: frozenset[str]) -> Callable[[re.Match, list[str]], bool]:
  """Whether a block's name-shaped first line names a speaker of this play."""
  counts = collections.Counter(_normalise(n) for n in names)
  dotted = sum(n.endswith('.') for n in names) * 2 > len(names)  # All plays but MND.

  def is_speaker(match: re.Match, block: list[str]) -> bool:
    name = match['name']
    if counts[_normalise(name)] >= MIN_NAME_LINES:
      return True
    if dotted and not name.endswith('.') and len(block) == 1 and not match['rest']:
      return False  # A title alone in its block: 'TROILUS AND CRESSIDA' under PROLOGUE.
    return _in_capitals(name) or _is_known(name, known)

  return is_speaker


def _inline(line: str, accepted: set[str]) -> tuple[str, str] | None:
  """(name, speech) of 'YORK. How long shall I be patient?': a name with name lines, or in
  capitals ('ALL. Amen.')."""
  for stop in re.finditer(r'\.\s+', line[:60]):
    name = line[:stop.start()]
    if _normalise(name) in accepted or (_name_line(name) and _in_capitals(name)):
      return name, line[stop.end():]
  return None


def speeches(text: str) -> dict[str, list[list[str]]]:
  """Each role of one play -> its speeches -> their lines (see shakespeare_text.parse_play)."""
  lines = text.splitlines()
  start = next((i for i, line in enumerate(lines) if _is_heading([line.strip()])), len(lines))
  blocks = _blocks(lines[start:])
  listed, entering = _capitalised('\n'.join(lines[:start])), _entering('\n'.join(lines[start:]))
  matches = _name_lines(blocks)
  is_speaker = _speaker_rule([m['name'] for m in matches if m], listed | entering)
  opens = [bool(m) and is_speaker(m, b) for b, m in zip(blocks, matches)]
  accepted = {_normalise(m['name']) for m, yes in zip(matches, opens) if yes}
  out, role = collections.defaultdict(list), None
  for block, match, yes in zip(blocks, matches, opens):
    inline = None if yes or _is_heading(block) else _inline(block[0], accepted)
    if _is_heading(block):
      role = None  # What follows a heading, before a name line, is no one's.
    elif yes or inline:
      name, first = (match['name'], match['rest'] or '') if yes else inline
      role = _full_name(name, listed, entering)
      out[role].append(_without_directions([first] + block[1:]))
    elif _is_title(block[0]):
      role = None
    elif role:
      out[role][-1].extend(_without_directions(block))
  return {name: [s for s in said if s] for name, said in out.items() if any(said)}
