"""bert_jax.runtime.peer_watch: the links that stop a multi-process run within a second of one process dying."""

import os
import signal
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


def _linked(count):
  """`count` PeerWatches inside this process (one per thread, as process 0..count-1 would build them),
  sharing a dict as the key-value store; each records lost-peer reports instead of exiting."""
  store, ready, lost = {}, threading.Condition(), {i: [] for i in range(count)}

  def kv_set(key, value):
    with ready:
      store[key] = value
      ready.notify_all()

  def kv_get(key, timeout_ms):
    with ready:
      assert ready.wait_for(lambda: key in store, timeout_ms / 1000)
      return store[key]

  watches = [None] * count

  def build(i):
    watches[i] = peer_watch.PeerWatch(i, count, "localhost", kv_set, kv_get, connect_timeout_s=10,
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
