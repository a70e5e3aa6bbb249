"""Every family's tiny pretraining config and every fine-tuning task reproduce their pinned numbers.

The goldens (tests/testdata/run_goldens.json, made by `python -m tests.run_goldens`) hold every
training loss, evaluation and test metric and parameter count of 8-step runs; a change to the
code that is not meant to change what it computes must reproduce them to relative 1e-6 on the
machine class they were made on; on another, the training losses to 1e-3 (run_goldens.py says
why and how). The
committed run directories of tests/testdata/run_checkpoints (written by the code the goldens
came from) must resume with the current code and continue exactly as the uninterrupted run.
"""

import json
import math

import pytest

from tests import run_goldens

REFERENCE = json.loads(run_goldens.GOLDEN_FILE.read_text())
GOLDENS, EXACT = run_goldens.goldens_for()
RTOL, ATOL = 1e-6, 1e-9
# Another instruction set rounds differently (up to ~3e-4 relative on 8-step numbers, 1e-8 absolute on
# a distillation loss near zero, between an AVX2 EPYC and an AVX-512 Xeon).
CROSS_MACHINE_RTOL, CROSS_MACHINE_ATOL = 1e-3, 1e-7


def assert_same(got, want, where="record", exact=True):
  """Equal structure; numbers within RTOL / ATOL (exact) or the cross-machine tolerance, the rest equal."""
  rtol, atol = (RTOL, ATOL) if exact else (CROSS_MACHINE_RTOL, CROSS_MACHINE_ATOL)
  if isinstance(want, dict):
    assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key in want:
      assert_same(got[key], want[key], f"{where}.{key}", exact)
  elif isinstance(want, list):
    assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
    for i, (g, w) in enumerate(zip(got, want)):
      assert_same(g, w, f"{where}[{i}]", exact)
  elif isinstance(want, float) or isinstance(got, float):
    assert isinstance(got, (int, float)) and (math.isclose(got, want, rel_tol=rtol, abs_tol=atol)
                                               or (math.isnan(got) and math.isnan(want))), \
        f"{where}: {got!r} != {want!r} (relative {rtol}; goldens of {run_goldens.machine()}: {exact})"
  else:
    assert got == want, f"{where}: {got!r} != {want!r}"


def continuous(record: dict) -> dict:
  """The training lines' losses and counts only. Evaluation metrics and the summary include
  discontinuous functions (rank statistics, argmax accuracy, the best step's choice) that
  another instruction set's rounding can flip: a tiny random model's Spearman moved 1.4%."""
  keep = lambda line: {k: v for k, v in line.items() if k == "step" or k.startswith(("train/", "model/"))}
  return {"metrics": [keep(line) for line in record["metrics"]]}


def test_goldens_cover_every_case():
  every = sorted({**run_goldens.CASES, **run_goldens.RESUMABLE})
  assert sorted(REFERENCE) == every
  for path in sorted(run_goldens.MACHINE_GOLDENS.glob("*.json")):  # the resumed runs are the reference's
    assert sorted(json.loads(path.read_text())) == sorted(run_goldens.CASES), path


def test_machine_classes_follow_the_vector_instruction_set():
  amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 fma avx avx2\n"
  intel = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw amx_tile\n"
  assert run_goldens.machine(amd) == run_goldens.REFERENCE_MACHINE == "AuthenticAMD-avx2"
  assert run_goldens.machine(intel) == "GenuineIntel-avx512"
  assert run_goldens.goldens_for("AuthenticAMD-avx2") == (REFERENCE, True)
  assert run_goldens.goldens_for("NoSuchVendor-avx2") == (REFERENCE, False)  # compared at the cross-machine tolerance


@pytest.mark.parametrize("name", list(run_goldens.CASES))
def test_run_reproduces_golden(name, tmp_path):
  _, record = run_goldens.run_case(name, tmp_path)
  if EXACT:
    assert_same(record, GOLDENS[name], name)
  else:  # goldens of another machine class
    assert_same(continuous(record), continuous(GOLDENS[name]), name, exact=False)


@pytest.mark.parametrize("name", list(run_goldens.RESUMABLE))
def test_checkpoint_of_earlier_code_resumes_exactly(name, tmp_path):
  half = run_goldens.STEPS // 2
  committed = run_goldens.CHECKPOINT_DIR / name
  record = run_goldens.resume_case(name, tmp_path, committed)
  # The checkpoints are the reference machine's: their run continues there exactly, elsewhere closely.
  want = REFERENCE[name]["metrics"]
  # Lines up to the checkpoint are the committed ones, untouched; the rest continue the uninterrupted run.
  assert [m for m in record["metrics"] if m["step"] <= half] == [m for m in want if m["step"] <= half]
  later = lambda lines: {"metrics": [m for m in lines if m["step"] > half]}
  if run_goldens.machine() == run_goldens.REFERENCE_MACHINE:
    assert_same(later(record["metrics"]), later(want), name)
  else:
    assert_same(continuous(later(record["metrics"])), continuous(later(want)), name, exact=False)
