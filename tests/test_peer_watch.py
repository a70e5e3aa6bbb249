"""bert_jax.runtime.peer_watch: the links that stop a multi-process run within a second of one process dying."""

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bert_jax.runtime import peer_watch
from tests.conftest import REPO


# jax.distributed's coordination service runs inside process 0. When process 0 dies, jaxlib's own
# client in every survivor fails its error poll at the moment the peer link ends (~35 ms after the
# kill, measured) and aborts the process with this fatal message if it gets there first. Either way
# the survivor stops at once and names the cause; a dead worker is only ever reported by the links.
JAXLIB_LOST_PEER = ("JAX distributed service detected fatal errors", "another task died")


def assert_stopped_for_lost_peer(code: int, text: str, survivor: int, victim: int, detail: str = "") -> None:
  """The survivor's exit status and output after `victim` was killed (see JAXLIB_LOST_PEER)."""
  if code == peer_watch.EXIT_LOST_PEER:
    assert (f"bert_jax: process {survivor} of 2 stopped: another process of this run died or was killed "
            f"{detail}") in text, text[-3000:]
  else:
    assert victim == 0 and code == -signal.SIGABRT and all(part in text for part in JAXLIB_LOST_PEER), \
        (code, text[-3000:])


class KeyValueStore:
  """A dict standing in for jax.distributed's key-value store, shared by PeerWatches in threads of this process."""

  def __init__(self):
    self.values, self._ready = {}, threading.Condition()

  def set(self, key, value):
    with self._ready:
      self.values[key] = value
      self._ready.notify_all()

  def get(self, key, timeout_ms):
    with self._ready:
      assert self._ready.wait_for(lambda: key in self.values, timeout_ms / 1000)
      return self.values[key]


def _linked(count):
  """`count` PeerWatches inside this process (one per thread, as process 0..count-1 would build them),
  sharing a dict as the key-value store; each records lost-peer reports instead of exiting."""
  store, lost = KeyValueStore(), {i: [] for i in range(count)}
  watches = [None] * count

  def build(i):
    watches[i] = peer_watch.PeerWatch(i, count, "localhost", store.set, store.get, connect_timeout_s=10,
                                      on_lost=lost[i].append)

  threads = [threading.Thread(target=build, args=(i,)) for i in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=20)
  assert all(watches), "links were not made"
  return watches, lost


def _wait_for(condition, seconds=5.0):
  deadline = time.time() + seconds
  while not condition() and time.time() < deadline:
    time.sleep(0.01)
  return condition()


def test_a_dead_worker_is_reported_by_process_0():
  watches, lost = _linked(3)
  watches[2].abandon()  # process 2 fails: its links end without a goodbye
  assert _wait_for(lambda: lost[0])
  assert lost[0] == ["process 2 closed its link to process 0 without finishing"]
  assert lost[1] == [] and lost[2] == []
  for w in watches[:2]:
    w.close()


def test_a_dead_process_0_is_reported_by_every_worker():
  watches, lost = _linked(3)
  watches[0].abandon()
  assert _wait_for(lambda: lost[1] and lost[2])
  assert lost[1] == ["process 0 closed its link to process 1 without finishing"]
  assert lost[2] == ["process 0 closed its link to process 2 without finishing"]


def test_an_orderly_end_reports_nothing():
  watches, lost = _linked(3)
  watches[1].close()  # a worker finishes before the others: process 0 must not call that a death
  time.sleep(0.3)
  watches[0].close()  # then process 0 finishes before worker 2
  time.sleep(0.3)
  watches[2].close()
  time.sleep(0.3)
  assert lost == {0: [], 1: [], 2: []}


def published_address(store):
  """(host, port) that process 0 published for the workers."""
  host, port = store.get(peer_watch._KEY, 10_000).rsplit(":", 1)
  return host, int(port)


def recording_proxy(upstream):
  """An address that forwards one connection to `upstream`, and the bytes its client sent so far: what
  anyone on the path between a worker and process 0 could capture."""
  server = socket.create_server(("127.0.0.1", 0))
  sent = bytearray()

  def pump(source, sink, record):
    try:
      while data := source.recv(4096):
        if record:
          sent.extend(data)
        sink.sendall(data)
    except OSError:
      pass  # one side went away: the other's link ends with it
    finally:
      sink.close()

  def serve():
    with server:
      client, _ = server.accept()
    upstream_link = socket.create_connection(upstream)
    threading.Thread(target=pump, args=(upstream_link, client, False), daemon=True).start()
    pump(client, upstream_link, True)

  threading.Thread(target=serve, daemon=True).start()
  return "127.0.0.1:%d" % server.getsockname()[1], sent


def _read_until_hung_up(link):
  """Reads what the other side sends until it ends the link (a reset, where it left bytes unread)."""
  link.settimeout(5)  # a link process 0 kept open fails the test with a timeout
  try:
    while link.recv(4096):
      pass
  except ConnectionResetError:
    pass


def _refusals(caplog):
  return [r.getMessage() for r in caplog.records if "Peer links: refused" in r.getMessage()]


def _refused(caplog, stranger, *reasons):
  """Whether process 0 logged refusing the connection from `stranger` (a socket or its local address) for one
  of `reasons`."""
  address = "%s:%d" % (stranger.getsockname() if isinstance(stranger, socket.socket) else stranger)[:2]
  return any(f"from {address}: " in m and any(r in m for r in reasons) for m in _refusals(caplog))


def test_strangers_are_refused_and_never_take_a_workers_place(caplog):
  """Garbage, silence, a knock, a replayed answer, a wrong secret, a duplicate and an out-of-range index reach
  process 0 before the real workers (who come in reverse order); each is refused and logged, the workers all
  link, and a real worker's death is still reported."""
  caplog.set_level(logging.WARNING)
  count, store, lost = 4, KeyValueStore(), {i: [] for i in range(4)}
  watches = [None] * count

  def process_0():
    watches[0] = peer_watch.PeerWatch(0, count, "localhost", store.set, store.get, connect_timeout_s=30,
                                      on_lost=lost[0].append, handshake_timeout_s=4)

  server_thread = threading.Thread(target=process_0)
  server_thread.start()
  address = published_address(store)
  assert address[0] == "127.0.0.1"  # the localhost coordinator's interface, not every interface

  def worker(i, kv_get=store.get):
    return peer_watch.PeerWatch(i, count, "localhost", store.set, kv_get, connect_timeout_s=10,
                                on_lost=lost.setdefault(i, []).append)

  silent = socket.create_connection(address)  # connects and says nothing, holding the link open
  knock = socket.create_connection(address)  # a port scan: connects and hangs up at once
  knock_address = knock.getsockname()
  knock.close()
  garbage = socket.create_connection(address)
  garbage.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: port-scanner\r\n\r\n")
  wrong = {peer_watch._SECRET_KEY: "00" * 32}
  with pytest.raises(ConnectionError, match="refused the peer link of process 1"):
    worker(1, lambda key, ms: wrong.get(key) or store.get(key, ms))
  # Worker 3 links through a proxy that records its answer; a stranger replays it on a link of its own.
  proxy, captured = recording_proxy(address)
  watches[3] = worker(3, lambda key, ms: proxy if key == peer_watch._KEY else store.get(key, ms))
  assert len(captured) == peer_watch._INDEX_BYTES + peer_watch._MAC_BYTES
  replay = socket.create_connection(address)
  assert len(peer_watch._recv_exactly(replay, peer_watch._NONCE_BYTES)) == peer_watch._NONCE_BYTES
  replay.sendall(bytes(captured))
  with pytest.raises(ConnectionError, match="refused"):
    worker(3)  # holds the secret, but process 3 is already linked
  with pytest.raises(ConnectionError, match="refused"):
    worker(7)
  watches[2] = worker(2)
  watches[1] = worker(1)
  server_thread.join(timeout=20)
  assert watches[0], "process 0 did not finish linking"
  # Process 0 linked every worker while the silent stranger's handshake was still pending.
  assert not any("no complete answer" in m for m in _refusals(caplog)), _refusals(caplog)

  assert _wait_for(lambda: len(_refusals(caplog)) == 7, seconds=10), _refusals(caplog)
  # The knock reads as a clean close, or as a reset when process 0's nonce reached the closed socket first.
  assert _refused(caplog, knock_address, "peer link closed after 0 of 48 bytes", "Connection reset by peer",
                  "Broken pipe"), _refusals(caplog)
  assert _refused(caplog, silent, "no complete answer within 4 s")
  assert _refused(caplog, garbage, "garbage instead of a handshake (begins b'GET / HTTP")
  assert _refused(caplog, replay, "bad MAC for process 3")
  assert sum("bad MAC for process 1" in m for m in _refusals(caplog)) == 1  # the wrong secret
  assert sum("duplicate index: process 3 is already linked" in m for m in _refusals(caplog)) == 1
  assert sum("index 7 out of range 1..3" in m for m in _refusals(caplog)) == 1
  for stranger in (silent, garbage, replay):
    _read_until_hung_up(stranger)
    stranger.close()
  assert not any(lost.values()), lost  # strangers hanging up are nobody's death

  watches[2].abandon()
  assert _wait_for(lambda: lost[0])
  assert lost[0] == ["process 2 closed its link to process 0 without finishing"]
  for w in (watches[0], watches[1], watches[3]):
    w.close()


def test_a_worker_that_never_links_is_named_and_the_others_let_go():
  store, lost = KeyValueStore(), {0: [], 2: []}
  errors, watches = [], {}

  def process_0():
    try:
      peer_watch.PeerWatch(0, 3, "localhost", store.set, store.get, connect_timeout_s=1.5, on_lost=lost[0].append)
    except TimeoutError as e:
      errors.append(str(e))

  server_thread = threading.Thread(target=process_0)
  server_thread.start()
  watches[2] = peer_watch.PeerWatch(2, 3, "localhost", store.set, store.get, connect_timeout_s=10,
                                    on_lost=lost[2].append)
  server_thread.join(timeout=20)
  assert len(errors) == 1 and "process(es) 1 of 3 never made an authenticated link" in errors[0], errors
  time.sleep(0.3)
  assert lost == {0: [], 2: []}  # process 0 said goodbye: worker 2 stops watching, it does not stop the run
  watches[2].close()


def test_listen_address_is_the_coordinators_interface():
  assert peer_watch.listen_address("localhost") == (socket.AF_INET, "127.0.0.1")
  assert peer_watch.listen_address("127.0.0.1") == (socket.AF_INET, "127.0.0.1")
  # A host name that resolves to loopback only here (Debian's `127.0.1.1 hostname`) names no interface
  # that other hosts can reach.
  if ipaddress.ip_address(socket.gethostbyname(socket.gethostname())).is_loopback:
    assert peer_watch.listen_address(socket.gethostname()) is None


def test_answers_must_be_exact():
  assert peer_watch._parse_index(peer_watch._index_field(12)) == 12
  for field in (b"12".ljust(16, b"\0"), b" 12".ljust(16), b"+12".ljust(16), b"012".ljust(16), b"\xff" * 16,
                "١٢".encode().ljust(16)):
    assert peer_watch._parse_index(field) is None, field


_PROCESS = textwrap.dedent("""
    import os, sys, time
    import jax
    from bert_jax.runtime import peer_watch
    index, victim, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # A heartbeat far longer than the test's bound: only the links can stop the survivor in time.
    jax.distributed.initialize(f"localhost:{port}", 2, index, heartbeat_timeout_seconds=600)
    watch = peer_watch.start()
    print("linked", flush=True)
    if index == victim:
      time.sleep(1)
      os.kill(os.getpid(), 9)
    time.sleep(300)  # the survivor waits outside any collective, where nothing else would notice
""")


@pytest.mark.parametrize("victim", [1, 0])
def test_kill_9_stops_the_survivor_within_seconds(tmp_path, victim):
  script = tmp_path / "process.py"
  script.write_text(_PROCESS)
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  port = 20000 + (os.getpid() * 11 + victim + 5) % 20000
  procs = [subprocess.Popen([sys.executable, str(script), str(i), str(victim), str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    assert procs[victim].wait(timeout=120) == -9
    killed_at = time.time()
    survivor = procs[1 - victim]
    code = survivor.wait(timeout=60)
    waited = time.time() - killed_at
    text = survivor.stdout.read()
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert "linked" in text
  assert waited < 10, waited
  assert_stopped_for_lost_peer(code, text, 1 - victim, victim,
                               f"(process {victim} closed its link to process {1 - victim} without finishing)")
