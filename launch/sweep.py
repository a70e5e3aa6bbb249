"""Ablation sweeps: a grid of `--config.*` values expanded into runs, run here in sequence or printed.

    python launch/sweep.py --config=configs/pretrain.py:albert-tiny --workdir=/tmp/sweep \
        --grid=model.share_layers=none,all,attention --grid=data.mask_rate=0.1,0.15 \
        --set=total_steps=200 --set=eval_every=100
    python -m bert_jax.report /tmp/sweep            # table (report.md) + curves (PNG)

Every combination of the --grid values (cartesian product) becomes one run in
WORKDIR/<key=value,...> with the --set values added to all of them; the
sweep's plan is written to WORKDIR/sweep.json (read by bert_jax.report).
`--print` prints one launch command per run instead of running them (paste
them into a cluster's job scripts); running again skips runs that finished
and resumes the one that was interrupted (bert_jax.main resumes from its
checkpoints). Extra flags after `--` go to every bert_jax.main command
(e.g. `-- --coordinator_address=...`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time

from bert_jax.runtime import fileio


def parse_assignment(text: str, flag: str) -> tuple[str, list[str]]:
  """'key=v1,v2' -> ('key', ['v1', 'v2']), with a clear error for anything else."""
  key, sep, values = text.partition("=")
  if not sep or not key or not values:
    raise SystemExit(f"{flag}={text!r}: expected KEY=VALUE[,VALUE...] (e.g. model.share_layers=none,all)")
  if not re.fullmatch(r"[A-Za-z_][\w.]*", key):
    raise SystemExit(f"{flag}={text!r}: {key!r} is not a config key (letters, digits, _ and .)")
  return key, values.split(",")


def run_name(assignment: dict[str, str]) -> str:
  """Folder name of one run: the grid values, keys shortened to their last part."""
  parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in assignment.items()]
  return re.sub(r"[^\w=.,+-]", "_", ",".join(parts)) or "run"


def expand(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
  keys = [k for k, _ in grid]
  if len(set(keys)) != len(keys):
    raise SystemExit(f"--grid names a key twice: {keys}")
  return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))] or [{}]


def command(config: str, workdir: str, values: dict[str, str], extra: list[str]) -> list[str]:
  return ([sys.executable, "-m", "bert_jax.main", f"--config={config}", f"--workdir={workdir}"]
          + [f"--config.{k}={v}" for k, v in values.items()] + extra)


def finished(workdir: str) -> bool:
  """A run is done once its bert_jax.main command exited 0 (the sweep leaves a `sweep_done` marker)."""
  return os.path.isfile(os.path.join(workdir, "sweep_done"))


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  extra = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(prog="python launch/sweep.py", description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True, help="config file[:arg], as for bert_jax.main")
  parser.add_argument("--workdir", required=True, help="one sub-folder per run is made here")
  parser.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeat for a product)")
  parser.add_argument("--set", action="append", default=[], help="KEY=VALUE given to every run")
  parser.add_argument("--print", action="store_true", help="print the launch commands instead of running them")
  args = parser.parse_args(argv)

  grid = [parse_assignment(g, "--grid") for g in args.grid]
  fixed = {}
  for s in args.set:
    key, values = parse_assignment(s, "--set")
    fixed[key] = ",".join(values)
  runs = []
  for assignment in expand(grid):
    name = run_name(assignment)
    runs.append({"name": name, "workdir": os.path.join(os.path.abspath(args.workdir), name),
                 "grid": assignment, "set": fixed})
  if len({r["name"] for r in runs}) != len(runs):
    raise SystemExit("two runs would share a folder; give the grid values distinct names")

  plan = {"config": args.config, "grid": dict(grid), "set": fixed, "runs": runs}
  if args.print:
    for run in runs:
      print(shlex.join(command(args.config, run["workdir"], {**run["set"], **run["grid"]}, extra)))
    return
  os.makedirs(args.workdir, exist_ok=True)
  fileio.write_atomic(os.path.join(args.workdir, "sweep.json"), json.dumps(plan, indent=2))

  failed = []
  for i, run in enumerate(runs, 1):
    if finished(run["workdir"]):
      print(f"[{i}/{len(runs)}] {run['name']}: done already", flush=True)
      continue
    cmd = command(args.config, run["workdir"], {**run["set"], **run["grid"]}, extra)
    print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd[1:])}", flush=True)
    start = time.time()
    os.makedirs(run["workdir"], exist_ok=True)
    with open(os.path.join(run["workdir"], "sweep.log"), "a") as log:
      code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code == 0:
      open(os.path.join(run["workdir"], "sweep_done"), "w").close()
      print(f"[{i}/{len(runs)}] {run['name']}: finished in {time.time() - start:.0f} s", flush=True)
    else:
      failed.append(run["name"])
      print(f"[{i}/{len(runs)}] {run['name']}: exit status {code}; see {run['workdir']}/sweep.log", flush=True)
  print(f"report: python -m bert_jax.report {args.workdir}")
  if failed:
    raise SystemExit(f"{len(failed)} of {len(runs)} runs failed: {failed}")


if __name__ == "__main__":
  main()
