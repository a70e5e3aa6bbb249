"""Stops every process of a multi-process run within a second of one of them dying.

jax.distributed notices a dead worker only through missed heartbeats, and then
aborts the survivors from C++ (SIGABRT and a stack dump); a survivor blocked in
a cross-process collective can wait on the dead peer until then. (A dead process
0, which hosts the coordination service, jaxlib notices within tens of
milliseconds, racing these links, and aborts the others with its own message.) A killed
process, though, has its sockets closed by the kernel at once, so a plain TCP
link per process is a much faster and cleaner detector:

    process 0 (listens) <--- link ---> process 1
                        <--- link ---> process 2 ...

Process 0 publishes its listening address through jax.distributed's key-value
store; every other process connects and sends its index. When a link reaches
end-of-file without the peer's goodbye, the process on this side prints which
peer was lost and exits with `EXIT_LOST_PEER`; process 0 exiting closes every
other link, so the whole run stops. A goodbye (`PeerWatch.close`) marks an
orderly end. A host that vanishes without closing its sockets is still caught
by TCP keepalive and, as a last resort, by jax.distributed's heartbeat timeout.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Callable

from absl import logging

EXIT_LOST_PEER = 3  # exit status of a process whose peer died
_KEY = "bert_jax/peer_watch/address"
_BYE = b"B"
_INDEX_BYTES = 16  # a worker's first message: its process index, space-padded


def _recv_exactly(link: socket.socket, size: int) -> bytes:
  data = b""
  while len(data) < size:
    chunk = link.recv(size - len(data))
    if not chunk:
      raise ConnectionError(f"peer link closed after {len(data)} of {size} bytes")
    data += chunk
  return data


def lost_peer_message(process_index: int, process_count: int, cause: str) -> str:
  return (f"bert_jax: process {process_index} of {process_count} stopped: another process of this run died or "
          f"was killed ({cause}). Completed checkpoints are intact; relaunch the same command on all processes "
          "to resume from the latest one.")


def exit_lost_peer(process_index: int, process_count: int, cause: str) -> None:
  """Prints the lost-peer message and leaves at once.

  `os._exit`, not `sys.exit`: a normal exit would run jax.distributed's shutdown barrier, which waits
  for the dead process until the heartbeat timeout and then aborts. Checkpoints need no cleanup: a
  completed step is final, one still being written stays a temporary folder that a resumed run ignores.
  """
  print(lost_peer_message(process_index, process_count, cause), file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_LOST_PEER)


def _keepalive(sock: socket.socket) -> None:
  """Probes an idle link every few seconds, so a host that vanished without closing it is noticed in ~25 s."""
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
  for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
    if hasattr(socket, name):  # Linux names; other systems keep their defaults
      sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class PeerWatch:
  """Links this process to the others (see the module docstring) and watches the links in daemon threads.

  Args:
    kv_set, kv_get: jax.distributed's key-value store (`client.key_value_set`,
      `client.blocking_key_value_get(key, timeout_ms)`), used to publish process 0's address.
    coordinator_host: the host part of the coordinator address, which every process can reach.
    on_lost: called with a description of the lost peer; the default prints and exits (`exit_lost_peer`).
  """

  def __init__(self, process_index: int, process_count: int, coordinator_host: str,
               kv_set: Callable[[str, str], None], kv_get: Callable[[str, int], str],
               connect_timeout_s: float = 60.0, on_lost: Callable[[str], None] | None = None):
    self.process_index, self.process_count = process_index, process_count
    self._on_lost = on_lost or (lambda cause: exit_lost_peer(process_index, process_count, cause))
    self._closing = threading.Event()
    self._links: list[socket.socket] = []
    if process_index == 0:
      server = socket.create_server(("", 0), backlog=process_count)
      kv_set(_KEY, f"{coordinator_host}:{server.getsockname()[1]}")
      server.settimeout(connect_timeout_s)
      for _ in range(process_count - 1):
        link, _ = server.accept()
        link.settimeout(connect_timeout_s)
        peer = int(_recv_exactly(link, _INDEX_BYTES).decode())
        link.settimeout(None)
        self._watch(link, f"process {peer} closed its link to process 0 without finishing")
      server.close()
    else:
      host, port = kv_get(_KEY, int(connect_timeout_s * 1000)).rsplit(":", 1)
      link = socket.create_connection((host, int(port)), timeout=connect_timeout_s)
      link.settimeout(None)
      link.sendall(f"{process_index:<{_INDEX_BYTES}d}".encode())
      self._watch(link, f"process 0 closed its link to process {process_index} without finishing")

  def _watch(self, link: socket.socket, cause: str) -> None:
    _keepalive(link)
    self._links.append(link)
    threading.Thread(target=self._read, args=(link, cause), daemon=True, name="bert_jax-peer-watch").start()

  def _read(self, link: socket.socket, cause: str) -> None:
    try:
      data = link.recv(1)
    except OSError as e:  # reset, or a keepalive probe went unanswered
      data, cause = b"", f"{cause}: {e}"
    if data != _BYE and not self._closing.is_set():
      self._on_lost(cause)

  def close(self) -> None:
    """Says goodbye on every link, then ends it: this process is ending in order, not dying."""
    self._end(goodbye=True)

  def abandon(self) -> None:
    """Ends every link without a goodbye, as a killed process's kernel would: for a process that failed on
    its own, so that the others stop now instead of waiting in a collective for it."""
    self._end(goodbye=False)

  def _end(self, goodbye: bool) -> None:
    self._closing.set()  # this side's own readers then see end-of-file without reporting it
    for link in self._links:
      try:
        if goodbye:
          link.sendall(_BYE)
        # shutdown, not close: closing a socket that a reader thread is blocked on sends nothing.
        link.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass  # the peer has already gone; nothing left to tell it
    self._links = []


def start(connect_timeout_s: float = 60.0) -> PeerWatch | None:
  """A PeerWatch for the current jax.distributed run, or None (one process, or the link could not be made).

  A link that cannot be made (say a firewall between hosts) is logged and the run goes on, watched by the
  heartbeat alone.
  """
  import jax
  from jax._src import distributed
  if jax.process_count() == 1:
    return None
  client = distributed.global_state.client
  host = distributed.global_state.coordinator_address.rsplit(":", 1)[0].strip("[]")
  try:
    return PeerWatch(jax.process_index(), jax.process_count(), host, client.key_value_set,
                     client.blocking_key_value_get, connect_timeout_s)
  except (OSError, ValueError, jax.errors.JaxRuntimeError) as e:
    logging.warning("No peer links (%s): a dead process is noticed only after --heartbeat_timeout.", e)
    return None
