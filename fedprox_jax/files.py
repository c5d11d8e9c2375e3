"""Writing files so that a kill, a full disk or a reader never sees half of one."""
import hashlib
import os
import pathlib

from fedprox_jax.errors import DataError


def write_atomically(path: pathlib.Path, content: str | bytes) -> None:
  """Writes `content` to `path`: readers (and a kill) see the old file or the new, never half of
  one; a failed write leaves the old file and no temporary one."""
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
