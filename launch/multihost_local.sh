#!/usr/bin/env bash
# One multi-host job as N processes on this machine: what a TPU pod or a GPU cluster runs, on CPU
# (gloo collectives), to check a multi-host configuration before paying for one.
#
#   launch/multihost_local.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] [-l LOG_DIR] -- \
#       train --gin_file=gin/runs/sft.gin --gin_file=gin/models/tiny.gin --gin.MODEL_DIR="'runs/x'"
#
# Every process runs the same `onesearch` command (train, eval or infer) with
# --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I and
# XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES_PER_PROCESS. Each reads its own shard
# of the data; process 0 writes the logs and metrics; checkpoints are written by all of them
# through orbax. Output lines are prefixed with [process I] (and kept in LOG_DIR/process_I.log
# with -l). With TrainConfig.input_shards a multiple of N the run equals a one-process run on
# N x DEVICES_PER_PROCESS devices (tests/launch/test_multihost_local.py).
#
# If a process fails the others are stopped and the script exits with its status; SIGTERM/SIGINT
# are passed to every process (each writes its preemption checkpoint, as on a pod).
# ONESEARCH overrides the command (default: the project's .venv/bin/onesearch).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
processes=2 devices=1 port="" log_dir=""
usage="usage: launch/multihost_local.sh [-n PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] [-l LOG_DIR] -- COMMAND [FLAGS]"
while getopts "n:d:p:l:h" opt; do
  case "$opt" in
    n) processes="$OPTARG" ;;
    d) devices="$OPTARG" ;;
    p) port="$OPTARG" ;;
    l) log_dir="$OPTARG" ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
if [[ $# -eq 0 ]]; then echo "$usage" >&2; exit 2; fi
for value in "$processes" "$devices"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "error: -n and -d take positive integers, got '$value'" >&2; exit 2; }
done
read -r -a onesearch <<< "${ONESEARCH:-$here/.venv/bin/onesearch}"
if [[ -z "$port" ]]; then
  port="$("${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
[[ -n "$log_dir" ]] && mkdir -p "$log_dir"

pids=()
stop_all() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap 'stop_all' TERM INT
for ((i = 0; i < processes; i++)); do
  log="/dev/null"; [[ -n "$log_dir" ]] && log="$log_dir/process_$i.log"
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    "${onesearch[@]}" "$@" --coordinator_address="127.0.0.1:$port" --num_processes="$processes" --process_id="$i" \
    > >(sed -u "s/^/[process $i] /" | tee "$log") 2>&1 &
  pids+=("$!")
done
echo "[launch] $processes processes x $devices CPU devices, coordinator 127.0.0.1:$port: ${pids[*]}" >&2

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  finished=""
  set +e
  wait -n -p finished "${running[@]}"
  code=$?
  set -e
  if [[ -z "$finished" ]]; then  # a trapped signal interrupted wait (keep waiting), or no job is left
    ((code == 127)) && break
    continue
  fi
  running=($(printf '%s\n' "${running[@]}" | grep -vx "$finished" || true))
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
    echo "[launch] process with pid $finished exited with status $code: stopping the others" >&2
    stop_all
  fi
done
exit "$status"
