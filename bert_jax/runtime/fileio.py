"""Run-directory paths that may be local or on a bucket (gs://, s3://): one epath-based API.

Local paths are made absolute (a relative workdir means the same folder from any later cwd);
remote ones are kept as URIs. epath reaches gs:// through gcsfs (the `gcs` extra) or TensorFlow.
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(path) -> bool:
  return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
  """epath.Path of a run path: absolute if local, unchanged if a URI."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(os.path.expanduser(path)))


def write_text_atomic(path, text: str) -> None:
  """Writes `text` to `path` so that a reader never sees a partial file.

  Local: a temporary file renamed over the target. Object stores (gs://) publish an
  object only once its upload completes, so a direct write is already all-or-nothing.
  """
  path = resolve(path)
  if is_remote(path):
    path.write_text(text)
    return
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


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
