"""Strangers on every port process 0 opens while a two-process run starts: the run trains as if alone.

A port scanner, a stray process or another run on the same hosts may connect to the coordination service
(jax.distributed's gRPC port), to the CPU collectives' listener or to the peer-link port
(bert_jax.runtime.peer_watch) before the real worker does. Each port here gets three: one sending garbage,
one holding the link open in silence, one replaying a real worker's handshake answer from an earlier run.
"""

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from bert_jax import train
from bert_jax.runtime import peer_watch
from tests.conftest import REPO
from tests.test_peer_watch import KeyValueStore, published_address, recording_proxy
from tests.test_train import corpus, losses, overrides, quick_config  # noqa: F401 (fixture)

pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc/self/net"), reason="reads listening sockets from /proc"),
              pytest.mark.xdist_group("processes")]  # pytest.ini: several JAX processes, one test at a time

# Process 1 asks for the peer-link address as soon as it has joined and connects a few milliseconds after
# process 0 publishes it, sooner than any scan of process 0's sockets. Held back 3 s, it comes after the
# strangers, who would have taken its place in a process 0 that trusted whoever connected first.
_LATE_WORKER = textwrap.dedent("""
    import runpy, sys, time
    from bert_jax.runtime import peer_watch
    connect = peer_watch.PeerWatch._connect
    def late_connect(self, *args):
      time.sleep(3)
      connect(self, *args)
    peer_watch.PeerWatch._connect = late_connect
    runpy.run_module("bert_jax.main", run_name="__main__", alter_sys=True)
""")
_GARBAGE = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: port-scanner\r\n\r\n" + bytes(range(256))


def listening_ports(pid: int) -> dict[int, str]:
  """{port: local address in /proc's hex} of the TCP sockets process `pid` listens on."""
  inodes = set()
  for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
      target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
      continue  # closed between the listing and the look
    if target.startswith("socket:["):
      inodes.add(target[len("socket:["):-1])
  ports = {}
  for table in ("tcp", "tcp6"):
    with open(f"/proc/{pid}/net/{table}") as f:
      for line in f.read().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and inode in inodes:  # 0A: LISTEN
          address, port = local.rsplit(":", 1)
          ports[int(port, 16)] = address
  return ports


def captured_answer() -> bytes:
  """A real worker's answer to process 0's challenge, recorded on the wire of an earlier two-process link."""
  store, watches = KeyValueStore(), {}
  thread = threading.Thread(target=lambda: watches.setdefault(0, peer_watch.PeerWatch(
      0, 2, "localhost", store.set, store.get, connect_timeout_s=10)))
  thread.start()
  proxy, captured = recording_proxy(published_address(store))
  watches[1] = peer_watch.PeerWatch(1, 2, "localhost", store.set,
                                    lambda key, ms: proxy if key == peer_watch._KEY else store.get(key, ms),
                                    connect_timeout_s=10)
  thread.join(timeout=20)
  for watch in watches.values():
    watch.close()
  return bytes(captured)


class Stranger:
  """A connection to process 0 that is none of its workers; records what it got back and how it ended."""

  def __init__(self, kind: str, port: int, replay: bytes):
    self.kind, self.port, self.received, self.ended = kind, port, b"", "still open at the end"
    self.started = time.time()
    try:
      self.link = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:  # a listener that closed between the scan and now
      self.link, self.address, self.ended = None, None, "refused: the port had closed"
      return
    self.address = "%s:%d" % self.link.getsockname()[:2]
    if kind == "garbage":
      self.link.sendall(_GARBAGE)
    self._thread = threading.Thread(target=self._run, args=(replay,), daemon=True)
    self._thread.start()

  def _run(self, replay: bytes) -> None:
    try:
      if self.kind == "replay":
        try:
          self.received += self.link.recv(4096)  # process 0's nonce, or whatever this port speaks first
        except TimeoutError:
          pass
        self.link.sendall(replay)
      self.link.settimeout(None)
      while data := self.link.recv(4096):
        self.received += data
      self.ended = "closed by process 0"
    except OSError as e:
      self.ended = type(e).__name__
    self.ended += f" after {time.time() - self.started:.1f} s"

  def hang_up(self) -> None:
    if self.link is None:
      return
    try:
      self.link.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass
    self._thread.join(timeout=5)
    self.link.close()

  def __repr__(self) -> str:
    return f"{self.kind} stranger on port {self.port}: got {self.received[:80]!r}, {self.ended}"


def test_strangers_on_every_port_of_process_0_change_nothing(corpus, tmp_path):  # noqa: F811
  settings = dict(total_steps=3, checkpoint_every=3, **{"mesh.data": 1, "mesh.fsdp": -1})
  train.train_and_evaluate(quick_config(corpus, **settings), str(tmp_path / "one"))
  replay = captured_answer()
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
  port = 20000 + (os.getpid() * 13 + 3) % 20000
  workdir = tmp_path / "two"
  logs = [tmp_path / f"process_{i}.log" for i in range(2)]
  outputs = [open(log, "w") for log in logs]
  flags = ["--config=configs/pretrain.py:bert-tiny", f"--workdir={workdir}", *overrides(corpus, **settings),
           f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  procs, strangers, attacked = [], [], {}
  try:
    procs.append(subprocess.Popen([sys.executable, "-m", "bert_jax.main", *flags, "--process_id=0"], cwd=REPO,
                                  env=env, stdout=outputs[0], stderr=subprocess.STDOUT))
    deadline = time.time() + 240
    while procs[0].poll() is None and time.time() < deadline:
      try:
        ports = listening_ports(procs[0].pid)
      except OSError:
        break  # process 0 has just ended
      for new in sorted(ports.keys() - attacked.keys()):
        attacked[new] = ports[new]
        strangers += [Stranger(kind, new, replay) for kind in ("garbage", "silent", "replay")]
      if not procs[1:] and port in attacked:
        # Process 1 joins only now: the coordination service meets the strangers before its first worker.
        procs.append(subprocess.Popen([sys.executable, "-c", _LATE_WORKER, *flags, "--process_id=1"], cwd=REPO,
                                      env=env, stdout=outputs[1], stderr=subprocess.STDOUT))
      time.sleep(0.05)
    codes = [p.wait(timeout=max(1, deadline - time.time())) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for stranger in strangers:
      stranger.hang_up()
    for f in outputs:
      f.close()
  text = [log.read_text() for log in logs]
  report = "\n".join(map(repr, strangers))
  print(report)  # what each port did with its strangers (pytest -s)
  assert codes == [0, 0], (codes, report, text[0][-3000:], text[1][-3000:])
  two, one = losses(workdir), losses(tmp_path / "one")
  assert sorted(two) == [1, 2, 3], text[0][-3000:]
  np.testing.assert_allclose([two[s] for s in (1, 2, 3)], [one[s] for s in (1, 2, 3)], rtol=1e-3)

  # The peer links were made (not given up on: the run would train without them too), on 127.0.0.1 only.
  assert not any("No peer links" in t for t in text), text
  linked = [line for line in text[0].splitlines() if "Peer links: processes 1..1 linked to process 0 on" in line]
  assert len(linked) == 1, text[0][-3000:]
  peer_port = int(linked[0].rstrip(".").rsplit(":", 1)[1])
  assert port in attacked and peer_port in attacked, (port, peer_port, attacked)
  assert attacked[peer_port] == "0100007F", attacked  # 127.0.0.1 in /proc's byte order
  # Each stranger on the peer-link port was refused and logged with its address and reason.
  reasons = {"garbage": "garbage instead of a handshake", "silent": "no complete answer within 5 s",
             "replay": "bad MAC for process 1"}
  on_peer_port = [s for s in strangers if s.port == peer_port]
  assert len(on_peer_port) == 3 and all(s.address for s in on_peer_port), on_peer_port
  for stranger in on_peer_port:
    assert f"refused a connection from {stranger.address}: {reasons[stranger.kind]}" in text[0], \
        (stranger, text[0][-3000:])
    assert stranger.ended.startswith(("closed by process 0", "ConnectionResetError")), stranger
