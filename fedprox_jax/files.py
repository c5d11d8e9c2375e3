"""Writing files so that a kill, a full disk or a reader never sees half of one."""
import glob
import hashlib
import os
import pathlib

from fedprox_jax.errors import DataError


def process_ended(pid: int) -> bool:
  """Whether process `pid` (of this machine) has ended: no such process, or a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
  except FileNotFoundError:
    return True
  except (OSError, IndexError):  # No /proc: ask the kernel.
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    except OSError:  # Another user's process, say: running.
      pass
    return False


def remove_stale_temporaries(path: pathlib.Path) -> None:
  """Removes the temporary files that writers of `path` killed mid-write left beside it (those of
  processes still running are theirs)."""
  prefix = f'.{path.name}.'
  try:
    siblings = list(path.parent.glob(f'{glob.escape(prefix)}*.tmp'))
  except OSError:
    return
  for tmp in siblings:
    pid = tmp.name[len(prefix):-len('.tmp')]
    if pid.isdigit() and int(pid) != os.getpid() and process_ended(int(pid)):
      tmp.unlink(missing_ok=True)


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
  """Writes `content` to `path`: readers (and a kill) see the old file or the new, never half of
  one; a failed write leaves the old file and no temporary one, and the temporary files of earlier
  writers that were killed mid-write go."""
  remove_stale_temporaries(path)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with open(tmp, 'wb') as f:
      f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def check_checksums(folder: pathlib.Path, expected: dict[str, str], what: str, missing_fix: str,
                    altered_fix: str) -> None:
  """Raises a one-line DataError naming the first file of `expected` (name -> SHA-256) that is
  missing from `folder`, unreadable or altered; `what` names the files ('MNIST file')."""
  for name, sha256 in expected.items():
    path = folder / name
    if not path.is_file():
      raise DataError(f'{what} {path} is missing: {missing_fix}')
    try:
      digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
      raise DataError(f'{what} {path} cannot be read ({e.strerror}): make it readable, or '
                      f'{altered_fix}') from None
    if digest != sha256:
      raise DataError(f'{what} {path} is corrupt (SHA256 {digest[:12]}..., expected '
                      f'{sha256[:12]}...): {altered_fix}')
