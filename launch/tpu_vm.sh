#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it (or reuse it), copy this checkout to every worker,
# install, and start the same bert_jax.main command on all workers (jax.distributed finds the
# other hosts from the TPU metadata: no flags needed).
#
#   launch/tpu_vm.sh -n NAME -z ZONE -a ACCELERATOR [-p PROJECT] [-v RUNTIME_VERSION] [-s] -- \
#       --config=configs/pretrain.py:bert-base --workdir=gs://BUCKET/run1 --config.mesh.fsdp=-1
#
#   -n  TPU VM name            -z  zone (e.g. us-east5-a)     -a  accelerator type (v5p-64, v5litepod-16, ...)
#   -p  project (default: gcloud's)   -v  runtime version (default tpu-ubuntu2204-base)   -s  spot VM
#
# The run's output goes to ~/bert_jax.log on every worker; follow worker 0 with
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 --command "tail -f ~/bert_jax.log"
# Relaunching the same command resumes from the workdir's checkpoints (after a preemption, too).
# Multi-host checkpoints need a workdir every worker can reach: a gs:// bucket.
# DRY_RUN=1 prints the gcloud commands instead of running them.
set -euo pipefail

name="" zone="" accelerator="" project="" version="tpu-ubuntu2204-base" spot=""
while getopts "n:z:a:p:v:s" opt; do
  case "$opt" in
    n) name="$OPTARG" ;;
    z) zone="$OPTARG" ;;
    a) accelerator="$OPTARG" ;;
    p) project="$OPTARG" ;;
    v) version="$OPTARG" ;;
    s) spot="--spot" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
if [[ -z "$name" || -z "$zone" || -z "$accelerator" || $# -eq 0 ]]; then
  echo "usage: $0 -n NAME -z ZONE -a ACCELERATOR [-p PROJECT] [-v VERSION] [-s] -- <bert_jax.main flags>" >&2
  exit 2
fi
for arg in "$@"; do
  case "$arg" in --workdir=gs://*) ;; --workdir=*)
    echo "warning: ${arg#--workdir=} is not a gs:// path; on a multi-host slice every worker must reach it" >&2 ;;
  esac
done

run() {  # prints (DRY_RUN=1) or runs a command
  if [[ "${DRY_RUN:-0}" == "1" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")

# 1. Create the slice unless it exists.
if [[ "${DRY_RUN:-0}" == "1" ]] || ! "${tpu[@]}" describe "$name" "${where[@]}" > /dev/null 2>&1; then
  run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" --version "$version" $spot
fi

# 2. This checkout (tracked files) to every worker.
repo="$(cd "$(dirname "$0")/.." && pwd)"
archive="$(mktemp -d)/bert_jax.tar.gz"
run git -C "$repo" archive --format=tar.gz --prefix=bert_jax/ -o "$archive" HEAD
run "${tpu[@]}" scp "$archive" "$name:~/bert_jax.tar.gz" "${where[@]}" --worker=all

# 3. Install (JAX with the libtpu that matches it) and 4. start on all workers at once.
jax_version="$(python -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.2)"
flags="$(printf '%q ' "$@")"
setup="rm -rf ~/bert_jax && tar xzf ~/bert_jax.tar.gz -C ~ && cd ~/bert_jax && pip install -q -e '.[gcs]' 'jax[tpu]==${jax_version}'"
start="cd ~/bert_jax && nohup python -m bert_jax.main ${flags} > ~/bert_jax.log 2>&1 < /dev/null &"
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$setup"
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$start"
echo "started on every worker of $name; logs: ~/bert_jax.log" >&2
