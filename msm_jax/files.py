"""Files written whole or not at all: every file the project writes (JSON, Markdown, PNG
overlays, reports, packages, the export) goes to a temporary name in the same folder, is
flushed to disk, then renamed over the target, so a kill, Ctrl-C or a full disk leaves the
old file or none, never a truncated one."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str | None = "utf-8"):
  """``with atomic_write(path) as file:`` writes ``path`` atomically; on an exception inside
  the block (or a failed flush) the temporary file is removed and ``path`` is left as it was.
  ``mode``: "w" (text) or "wb" (bytes)."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_write: mode {mode!r}, expected 'w' or 'wb'")
  folder = os.path.dirname(os.path.abspath(path))
  descriptor, temporary = tempfile.mkstemp(
    prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder
  )
  try:
    with os.fdopen(descriptor, mode, encoding=None if "b" in mode else encoding) as file:
      yield file
      file.flush()
      os.fsync(file.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def write_json(path: str, payload, indent: int = 2, **dump_options) -> None:
  """``payload`` as JSON at ``path`` (atomically), its folder made."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_write(path) as file:
    json.dump(payload, file, indent=indent, **dump_options)


def write_text(path: str, text: str) -> None:
  """``text`` at ``path`` (atomically)."""
  with atomic_write(path) as file:
    file.write(text)


def replace_folder(staged: str, target: str, carried: Callable[[str], bool]) -> None:
  """Put the finished folder ``staged`` in the place of ``target``.

  The files of an older ``target`` that ``staged`` lacks and for which ``carried(name)`` holds
  (e.g. a model card) are copied in first; then ``target`` is renamed aside, ``staged``
  renamed to ``target`` and the old one removed. A reader sees the whole old folder or the
  whole new one; a kill between the two renames leaves the old one as ``<target>.replaced``.
  """
  target = os.path.normpath(target)
  if os.path.isdir(target):
    for name in os.listdir(target):
      source = os.path.join(target, name)
      if (
        carried(name) and os.path.isfile(source) and not os.path.exists(os.path.join(staged, name))
      ):
        shutil.copy2(source, os.path.join(staged, name))
    aside = target + ".replaced"
    if os.path.exists(aside):
      shutil.rmtree(aside)
    os.rename(target, aside)
    os.rename(staged, target)
    shutil.rmtree(aside)
  else:
    os.rename(staged, target)
