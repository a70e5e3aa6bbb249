#!/usr/bin/env bash
# Several bert_jax processes on this machine, each with its own fake CPU devices, joined through
# jax.distributed over localhost: the multi-host code path (per-process data shards, cross-process
# collectives, every process writing its part of the checkpoint) without a cluster.
#
#   launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] -- \
#       --config=configs/pretrain.py:bert-tiny --workdir=/tmp/mp --config.mesh.fsdp=-1
#
# Logs go to WORKDIR/logs/process_<i>.log (stdout of process 0 is also shown). The script
# exits with the first non-zero exit status; if one process dies the others stop with an
# error from the coordination service instead of hanging.
set -euo pipefail

processes=2
devices=4
port=$(( 20000 + RANDOM % 20000 ))
while getopts "n:d:p:" opt; do
  case "$opt" in
    n) processes="$OPTARG" ;;
    d) devices="$OPTARG" ;;
    p) port="$OPTARG" ;;
    *) echo "usage: $0 [-n processes] [-d devices] [-p port] -- <bert_jax.main flags>" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift

workdir=""
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
[[ -n "$workdir" ]] || { echo "$0: pass --workdir=DIR" >&2; exit 2; }
mkdir -p "$workdir/logs"

pids=()
for ((i = 0; i < processes; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    python -m bert_jax.main "$@" --coordinator_address="localhost:$port" \
      --num_processes="$processes" --process_id="$i" > "$workdir/logs/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
tail -n +1 -f "$workdir/logs/process_0.log" --pid="${pids[0]}" &

status=0
for pid in "${pids[@]}"; do
  code=0
  wait "$pid" || code=$?
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
  fi
done
exit "$status"
