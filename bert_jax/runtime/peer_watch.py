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

Process 0 listens on the interface the coordinator address names (127.0.0.1
for localhost) and publishes that address, with a fresh per-run secret,
through jax.distributed's key-value store, which only processes that joined
the run can read. Each link starts with a challenge: process 0 sends a random
nonce, the worker answers with its index and HMAC-SHA256(secret, nonce ||
index), and process 0 welcomes it only if the MAC matches and the index is one
still missing. Anything else that connects (a port scanner, a stray process,
another run on the same hosts, a replay of a real worker's bytes) is refused,
logged with its address and the reason, and never takes a worker's place;
each connection is vetted in its own thread under a short timeout, so a
stranger that sends nothing delays no worker. Workers arrive in any order;
process 0 waits for all of them until the start-up timeout, then names those
that never came.

When a link reaches end-of-file without the peer's goodbye, the process on this
side prints which peer was lost and exits with `EXIT_LOST_PEER`; process 0
exiting closes every other link, so the whole run stops. A goodbye
(`PeerWatch.close`) marks an orderly end. A host that vanishes without closing
its sockets is still caught by TCP keepalive and, as a last resort, by
jax.distributed's heartbeat timeout.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import sys
import threading
import time
from typing import Callable

from absl import logging

EXIT_LOST_PEER = 3  # exit status of a process whose peer died
HANDSHAKE_TIMEOUT_S = 5.0  # how long one connection may take to prove itself
_KEY = "bert_jax/peer_watch/address"
_SECRET_KEY = "bert_jax/peer_watch/secret"
_BYE = b"B"
_WELCOME = b"W"  # process 0's answer to a worker whose handshake it accepted
_NONCE_BYTES = 32
_INDEX_BYTES = 16  # a worker's index in its answer, space-padded ASCII
_MAC_BYTES = hashlib.sha256().digest_size
_LOCALHOST = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def _recv_exactly(link: socket.socket, size: int) -> bytes:
  data = b""
  while len(data) < size:
    chunk = link.recv(size - len(data))
    if not chunk:
      raise ConnectionError(f"peer link closed after {len(data)} of {size} bytes")
    data += chunk
  return data


def _mac(secret: bytes, nonce: bytes, index_field: bytes) -> bytes:
  return hmac.new(secret, nonce + index_field, hashlib.sha256).digest()


def _index_field(process_index: int) -> bytes:
  return f"{process_index:<{_INDEX_BYTES}d}".encode()


def _parse_index(field: bytes) -> int | None:
  """The index in a worker's answer, or None unless the field is exactly what `_index_field` writes."""
  text = field.decode("ascii", errors="replace").rstrip(" ")
  if not (text.isascii() and text.isdigit()) or _index_field(int(text)) != field:
    return None
  return int(text)


def listen_address(coordinator_host: str) -> tuple[socket.AddressFamily, str] | None:
  """(family, IP) of the interface the coordinator host names, for process 0's listening socket.

  None where no single interface would do: a name that resolves to loopback here but is not itself a
  loopback name (Debian's `127.0.1.1 hostname` line) — workers on other hosts reach it by DNS on another
  address, as they reach the coordination service, which listens everywhere.
  """
  if coordinator_host.lower() in _LOCALHOST:
    return socket.AF_INET, "127.0.0.1"
  family, _, _, _, sockaddr = socket.getaddrinfo(coordinator_host, None, type=socket.SOCK_STREAM)[0]
  ip = sockaddr[0]
  literal = coordinator_host.strip("[]")
  if ipaddress.ip_address(ip).is_loopback and ip != literal:
    return None
  return family, ip


def _listen(coordinator_host: str, backlog: int) -> tuple[socket.socket, str]:
  """Process 0's listening socket and the HOST:PORT to publish for it."""
  address = listen_address(coordinator_host)
  if address is not None:
    family, ip = address
    try:
      server = socket.create_server((ip, 0), family=family, backlog=backlog)
      host = f"[{ip}]" if family == socket.AF_INET6 else ip
      return server, f"{host}:{server.getsockname()[1]}"
    except OSError as e:
      if e.errno != errno.EADDRNOTAVAIL:
        raise
      why = f"{ip} is not an address of this host (NAT or a forwarded name?)"
  else:
    why = "it resolves to a loopback address here, which other hosts cannot reach"
  # Every interface, as the coordination service itself listens: the handshake still keeps strangers out.
  logging.warning("Peer links: listening on every interface, not only on coordinator host %r: %s.",
                  coordinator_host, why)
  server = socket.create_server(("", 0), backlog=backlog)
  return server, f"{coordinator_host}:{server.getsockname()[1]}"


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


class _Refused(Exception):
  """A connection to process 0 that is not a worker of this run still missing; the message says why."""


class PeerWatch:
  """Links this process to the others (see the module docstring) and watches the links in daemon threads.

  Args:
    kv_set, kv_get: jax.distributed's key-value store (`client.key_value_set`,
      `client.blocking_key_value_get(key, timeout_ms)`), used to publish process 0's address and the
      run's secret.
    coordinator_host: the host part of the coordinator address, which every process can reach; process 0
      listens on the interface it names.
    connect_timeout_s: how long process 0 waits for every worker, and a worker for process 0.
    handshake_timeout_s: how long process 0 gives one connection to answer its challenge.
    on_lost: called with a description of the lost peer; the default prints and exits (`exit_lost_peer`).

  Raises (in the constructor) TimeoutError on process 0 when some worker never linked, naming it, and
  ConnectionError on a worker that process 0 refused.
  """

  def __init__(self, process_index: int, process_count: int, coordinator_host: str,
               kv_set: Callable[[str, str], None], kv_get: Callable[[str, int], str],
               connect_timeout_s: float = 60.0, on_lost: Callable[[str], None] | None = None,
               handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S):
    self.process_index, self.process_count = process_index, process_count
    self._on_lost = on_lost or (lambda cause: exit_lost_peer(process_index, process_count, cause))
    self._closing = threading.Event()
    self._lock = threading.RLock()  # guards _links and, on process 0, _linked and _admitting
    self._links: list[socket.socket] = []
    if process_index == 0:
      self._linked: set[int] = set()
      self._admitting = True
      self._serve(coordinator_host, kv_set, connect_timeout_s, handshake_timeout_s)
    else:
      self._connect(kv_get, connect_timeout_s)

  def _serve(self, coordinator_host: str, kv_set: Callable[[str, str], None], connect_timeout_s: float,
             handshake_timeout_s: float) -> None:
    """Process 0: vets every connection in its own thread until each worker has linked, or the time is up."""
    secret = secrets.token_bytes(32)
    server, published = _listen(coordinator_host, backlog=self.process_count + 16)
    with server:
      kv_set(_SECRET_KEY, secret.hex())  # first: a worker that sees the address finds the secret too
      kv_set(_KEY, published)
      deadline = time.monotonic() + connect_timeout_s
      # accept wakes every so often to see whether the last worker has linked in its handshake thread.
      server.settimeout(0.1)
      while not self._all_linked() and time.monotonic() < deadline:
        try:
          link, address = server.accept()
        except TimeoutError:
          continue
        threading.Thread(target=self._admit, args=(link, address, secret, handshake_timeout_s), daemon=True,
                         name="bert_jax-peer-handshake").start()
      with self._lock:
        self._admitting = False  # a handshake still under way now finds the door shut
        missing = sorted(set(range(1, self.process_count)) - self._linked)
    if missing:
      # Goodbye, so the workers that did link stop watching instead of taking this for a death.
      self._end(goodbye=True)
      raise TimeoutError(f"peer links: process(es) {', '.join(map(str, missing))} of {self.process_count} "
                         f"never made an authenticated link to process 0 (listening on {published}) within "
                         f"{connect_timeout_s:g} s")
    logging.info("Peer links: processes 1..%d linked to process 0 on %s.", self.process_count - 1, published)

  def _all_linked(self) -> bool:
    with self._lock:
      return len(self._linked) == self.process_count - 1

  def _admit(self, link: socket.socket, address: tuple, secret: bytes, timeout_s: float) -> None:
    peer = f"{address[0]}:{address[1]}"
    try:
      index = self._challenge(link, secret, timeout_s)
      with self._lock:
        if not self._admitting:
          raise _Refused("it arrived after start-up had ended")
        if index in self._linked:
          raise _Refused(f"duplicate index: process {index} is already linked")
        link.sendall(_WELCOME)
        link.settimeout(None)
        self._linked.add(index)
        self._watch(link, f"process {index} closed its link to process 0 without finishing")
    except (_Refused, OSError) as e:
      why = f"no complete answer within {timeout_s:g} s" if isinstance(e, TimeoutError) else str(e)
      logging.warning("Peer links: refused a connection from %s: %s.", peer, why)
      link.close()

  def _challenge(self, link: socket.socket, secret: bytes, timeout_s: float) -> int:
    """The index of a peer that answers this connection's nonce as only a worker of this run can."""
    link.settimeout(timeout_s)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    link.sendall(nonce)
    answer = _recv_exactly(link, _INDEX_BYTES + _MAC_BYTES)
    field, mac = answer[:_INDEX_BYTES], answer[_INDEX_BYTES:]
    index = _parse_index(field)
    if index is None:
      raise _Refused(f"garbage instead of a handshake (begins {answer[:24]!r})")
    if not hmac.compare_digest(mac, _mac(secret, nonce, field)):
      raise _Refused(f"bad MAC for process {index}: not this run's secret, or a replayed answer")
    if not 1 <= index < self.process_count:
      raise _Refused(f"index {index} out of range 1..{self.process_count - 1}")
    return index

  def _connect(self, kv_get: Callable[[str, int], str], connect_timeout_s: float) -> None:
    """A worker: links to process 0 and answers its challenge."""
    host, port = kv_get(_KEY, int(connect_timeout_s * 1000)).rsplit(":", 1)
    secret = bytes.fromhex(kv_get(_SECRET_KEY, int(connect_timeout_s * 1000)))
    link = socket.create_connection((host.strip("[]"), int(port)), timeout=connect_timeout_s)
    try:
      nonce = _recv_exactly(link, _NONCE_BYTES)
      field = _index_field(self.process_index)
      link.sendall(field + _mac(secret, nonce, field))
      if link.recv(1) != _WELCOME:
        raise ConnectionError(f"process 0 ({host}:{port}) refused the peer link of process {self.process_index}; "
                              "its log says why")
    except BaseException:
      link.close()
      raise
    link.settimeout(None)
    self._watch(link, f"process 0 closed its link to process {self.process_index} without finishing")

  def _watch(self, link: socket.socket, cause: str) -> None:
    _keepalive(link)
    with self._lock:
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
    with self._lock:
      links, self._links = self._links, []
    for link in links:
      try:
        if goodbye:
          link.sendall(_BYE)
        # shutdown, not close: closing a socket that a reader thread is blocked on sends nothing.
        link.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass  # the peer has already gone; nothing left to tell it


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
