"""Every family's tiny pretraining config and every fine-tuning task reproduce their pinned numbers.

The goldens (tests/testdata/run_goldens.json, made by `python -m tests.run_goldens`) hold every
training loss, evaluation and test metric and parameter count of 8-step runs; a change to the
code that is not meant to change what it computes must reproduce them to relative 1e-6. The
committed run directories of tests/testdata/run_checkpoints (written by the code the goldens
came from) must resume with the current code and continue exactly as the uninterrupted run.
"""

import json
import math

import pytest

from tests import run_goldens

GOLDENS = json.loads(run_goldens.GOLDEN_FILE.read_text())
RTOL, ATOL = 1e-6, 1e-9


def assert_same(got, want, where="record"):
  """Equal structure; numbers within RTOL / ATOL, everything else exactly equal."""
  if isinstance(want, dict):
    assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key in want:
      assert_same(got[key], want[key], f"{where}.{key}")
  elif isinstance(want, list):
    assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
    for i, (g, w) in enumerate(zip(got, want)):
      assert_same(g, w, f"{where}[{i}]")
  elif isinstance(want, float) or isinstance(got, float):
    assert isinstance(got, (int, float)) and (math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL)
                                               or (math.isnan(got) and math.isnan(want))), \
        f"{where}: {got!r} != {want!r} (relative {RTOL})"
  else:
    assert got == want, f"{where}: {got!r} != {want!r}"


def test_goldens_cover_every_case():
  assert sorted(GOLDENS) == sorted({**run_goldens.CASES, **run_goldens.RESUMABLE})


@pytest.mark.parametrize("name", list(run_goldens.CASES))
def test_run_reproduces_golden(name, tmp_path):
  _, record = run_goldens.run_case(name, tmp_path)
  assert_same(record, GOLDENS[name], name)


@pytest.mark.parametrize("name", list(run_goldens.RESUMABLE))
def test_checkpoint_of_earlier_code_resumes_exactly(name, tmp_path):
  half = run_goldens.STEPS // 2
  committed = run_goldens.CHECKPOINT_DIR / name
  record = run_goldens.resume_case(name, tmp_path, committed)
  want = GOLDENS[name]["metrics"]
  # Lines up to the checkpoint are the committed ones, untouched; the rest continue the uninterrupted run.
  assert [m for m in record["metrics"] if m["step"] <= half] == [m for m in want if m["step"] <= half]
  assert_same([m for m in record["metrics"] if m["step"] > half], [m for m in want if m["step"] > half], name)
