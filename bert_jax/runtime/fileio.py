"""File I/O for paths that may be local or on a bucket (gs://, s3://), with the one atomic writer
and the one UTF-8 line reader of the codebase.

    resolve(path)                  epath.Path: local paths made absolute, URIs kept
    write_atomic(path, data)       text or bytes; a reader never sees a partial file
    atomic_path(path)              a temporary path beside `path` that replaces it on success
                                   (for writers that want a file name: np.save, safetensors, ArrayRecord)
    replace_folder(new, folder)    a complete folder takes another's place, never leaving neither
    open_binary(path)              a binary stream, gzip-decompressed when the name ends in .gz
    decode_lines(stream, name)     (line number, text) of each UTF-8 line; a bad byte names its line
    read_lines(path)               all lines of a local or remote text file, checked the same way
    upload_tree(local, remote)     a complete local folder copied to a bucket, replacing it safely

Local paths are made absolute (a relative workdir means the same folder from any later cwd);
remote ones are kept as URIs. epath reaches gs:// through gcsfs (the `gcs` extra) or TensorFlow.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator

from etils import epath


def is_remote(path) -> bool:
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """epath.Path of a run path: absolute if local, unchanged if a URI."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(os.path.expanduser(path)))


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
  """Yields a temporary path beside local `path`; when the block ends without an error it replaces `path`.

  On an error the temporary file is removed and `path` (if it existed) is left as it was.
  """
  path = os.path.abspath(os.fspath(path))
  folder = os.path.dirname(path)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{path}: folder {folder} does not exist")
  tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_atomic(path, data: str | bytes) -> None:
  """Writes text (UTF-8) or bytes to `path` so that a reader never sees a partial file.

  Local: a temporary file renamed over the target. Object stores (gs://) publish an
  object only once its upload completes, so a direct write is already all-or-nothing.
  """
  if is_remote(path):
    target = resolve(path)
    target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
    return
  with atomic_path(path) as tmp:
    with open(tmp, "wb" if isinstance(data, bytes) else "w", **({} if isinstance(data, bytes) else
                                                                {"encoding": "utf-8"})) as f:
      f.write(data)


def replace_folder(new: str, folder: str) -> None:
  """Renames the complete local folder `new` to `folder`, replacing what was there only once that works.

  A folder cannot be renamed over a non-empty one, so the old one is moved aside first (to a
  hidden, unique name that belongs to no one), back if the second rename fails, and deleted
  last: at every moment one complete copy exists.
  """
  if not os.path.lexists(folder):
    os.rename(new, folder)
    return
  parent, name = os.path.split(os.path.abspath(folder))
  old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex[:8]}")
  os.rename(folder, old)
  try:
    os.rename(new, folder)
  except BaseException:
    os.rename(old, folder)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _mtime(path: str) -> float:
  """A path's modification time; 0 for one another process removed meanwhile."""
  try:
    return os.path.getmtime(path)
  except FileNotFoundError:
    return 0.0


def recover_folder(folder: str) -> None:
  """Undoes what a kill during `replace_folder` leaves: the complete old copy set aside with no folder
  in its place is moved back (the newest, if several); set-aside copies beside a complete folder go.
  """
  parent, name = os.path.split(os.path.abspath(folder))
  if not os.path.isdir(parent):
    return
  aside = sorted((os.path.join(parent, entry) for entry in os.listdir(parent) if entry.startswith(f".{name}.old-")),
                 key=_mtime)
  if aside and not os.path.lexists(folder):
    try:
      os.rename(aside.pop(), folder)
    except FileNotFoundError:  # another process sharing the folder moved it back first
      pass
  for old in aside:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def open_binary(path) -> Iterator:
  """A binary stream of a local or remote file, decompressed when its name ends in `.gz`."""
  name = os.fspath(path)
  raw = epath.Path(name).open("rb") if is_remote(name) else open(name, "rb")
  with raw:
    if name.endswith(".gz"):
      with gzip.GzipFile(fileobj=raw) as stream:
        yield stream
    else:
      yield raw


def decode_lines(stream: Iterable[bytes], name: str, error: type[Exception] = ValueError
                 ) -> Iterator[tuple[int, str]]:
  """(line number, text) for each line of a binary stream, decoded as UTF-8 one line at a time.

  Lines end at "\\n" only (str.splitlines would also split on \\x0b, U+2028, ...); a trailing
  "\\r" is dropped, and so is a byte-order mark at the start. A byte that is not UTF-8 raises
  `error("NAME:LINE: not valid UTF-8: ...")`, naming the line and the byte.
  """
  offset = 0
  for number, raw in enumerate(stream, start=1):
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise error(f"{name}:{number}: not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} of the "
                  f"line (offset {offset + e.start} of the {'decompressed ' if name.endswith('.gz') else ''}"
                  "file)") from None
    offset += len(raw)
    text = text.removesuffix("\n").removesuffix("\r")
    if number == 1:
      text = text.removeprefix("\ufeff")
    yield number, text


def read_lines(path, error: type[Exception] = ValueError) -> list[str]:
  """Every line of a local or remote UTF-8 text file (`.gz` decompressed), checked as `decode_lines` does.

  A missing file raises FileNotFoundError; one that cannot be read (a folder, no permission, bad
  gzip data) raises `error` naming it.
  """
  name = os.fspath(path)
  if not (resolve(name).exists() if is_remote(name) else os.path.exists(name)):
    raise FileNotFoundError(f"{name}: no such file")
  try:
    with open_binary(name) as stream:
      return [text for _, text in decode_lines(stream, name, error)]
  except (OSError, EOFError) as e:  # a folder, no permission; gzip.BadGzipFile is an OSError
    raise error(f"{name}: cannot read the file: {e}") from e


def upload_tree(local_dir: str, remote) -> None:
  """Copies a complete local folder to a remote one, replacing it, never without a complete copy.

  Object stores have no atomic folder rename: the files go to `<remote>.tmp` first, the
  previous `<remote>` is removed only once that upload finished, the files are uploaded
  again to `<remote>`, and `<remote>.tmp` is removed last. At every moment either the old
  folder, the staging copy or the new folder is complete.
  """
  remote = resolve(remote)
  staging = remote.with_name(remote.name + ".tmp")
  if staging.exists():
    staging.rmtree()
  _upload(local_dir, staging)
  if remote.exists():
    remote.rmtree()
  _upload(local_dir, remote)
  staging.rmtree()


def _upload(local_dir: str, target_dir: epath.Path) -> None:
  for root, _, files in os.walk(local_dir):
    for name in files:
      source = os.path.join(root, name)
      target = target_dir / os.path.relpath(source, local_dir)
      target.parent.mkdir(parents=True, exist_ok=True)
      epath.Path(source).copy(target)
