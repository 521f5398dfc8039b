#!/usr/bin/env bash
# A Cloud TPU VM slice for onesearch: create (or reuse), install the project on every worker, run the
# same command on all of them, stream the logs, tear down.
#
#   export PROJECT=my-project ZONE=us-east5-a TPU_NAME=onesearch-v5p ACCELERATOR_TYPE=v5p-128
#   launch/tpu_pod.sh create                 # or reuse: a slice of that name is left as it is
#   launch/tpu_pod.sh install                # this checkout (git HEAD) to ~/onesearch-jax on every worker
#   launch/tpu_pod.sh copy demo_output/examples demo_output/sids   # local data to the same paths there
#   launch/tpu_pod.sh run train --gin_file=gin/runs/sft.gin --gin_file=gin/models/base.gin \
#       --gin_file=gin/launch/v5p_128.gin --gin.MODEL_DIR="'gs://BUCKET/runs/sft'"
#   launch/tpu_pod.sh logs                   # worker 0's log of the last run (tail -f)
#   launch/tpu_pod.sh delete
#
# Variables: PROJECT, ZONE, TPU_NAME, ACCELERATOR_TYPE (v5litepod-16, v5p-128, ...) are required;
# RUNTIME_VERSION (default: v2-alpha-tpuv5 for v5p, v2-alpha-tpuv5-lite for v5e, tpu-ubuntu2204-base
# otherwise), SPOT=1 (a spot slice: preemptible; `run` again resumes from the last checkpoint).
# `run` executes `.venv/bin/onesearch COMMAND FLAGS --multiprocess` on every worker at once
# (--worker=all); jax finds the slice's coordinator and each worker's index itself. Output is kept
# in ~/onesearch-run.log on each worker and streamed here. MODEL_DIR should be on GCS (orbax writes
# there from every worker); records can be copied with `copy` or read from gs:// paths.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}" "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}"
case "$ACCELERATOR_TYPE" in
  v5p-*) default_runtime=v2-alpha-tpuv5 ;;
  v5litepod-*) default_runtime=v2-alpha-tpuv5-lite ;;
  *) default_runtime=tpu-ubuntu2204-base ;;
esac
RUNTIME_VERSION="${RUNTIME_VERSION:-$default_runtime}"
remote_dir="onesearch-jax"
gcloud_tpu=(gcloud compute tpus tpu-vm --project="$PROJECT" --zone="$ZONE")

on_all() { "${gcloud_tpu[@]}" ssh "$TPU_NAME" --worker=all --command="$1"; }

quoted() { local out="" arg; for arg in "$@"; do out+=" $(printf '%q' "$arg")"; done; echo "${out# }"; }

command="${1:-}"
shift || true
case "$command" in
  create)
    if "${gcloud_tpu[@]}" describe "$TPU_NAME" --format="value(state)" >/dev/null 2>&1; then
      echo "reusing $TPU_NAME: $("${gcloud_tpu[@]}" describe "$TPU_NAME" --format="value(acceleratorType,state)")"
    else
      spot=(); [[ "${SPOT:-0}" == "1" ]] && spot=(--spot)
      "${gcloud_tpu[@]}" create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${spot[@]}"
    fi
    ;;
  install)
    archive="$(mktemp -t onesearch-XXXXXX.tar.gz)"
    git -C "$here" archive --format=tar.gz --prefix="$remote_dir/" HEAD > "$archive"
    "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:onesearch-jax.tar.gz" --worker=all
    rm -f "$archive"
    # the locked CPU stack, then jax's TPU build (libtpu) at the same version
    on_all "rm -rf $remote_dir && tar xzf onesearch-jax.tar.gz && cd $remote_dir && make setup JAX_EXTRA=tpu"
    ;;
  copy)
    [[ $# -gt 0 ]] || { echo "usage: launch/tpu_pod.sh copy LOCAL_DIR..." >&2; exit 2; }
    for dir in "$@"; do
      on_all "mkdir -p $remote_dir/$(dirname "$dir")"
      "${gcloud_tpu[@]}" scp --recurse "$dir" "$TPU_NAME:$remote_dir/$(dirname "$dir")/" --worker=all
    done
    ;;
  run)
    [[ $# -gt 0 ]] || { echo "usage: launch/tpu_pod.sh run train|eval|infer [FLAGS]" >&2; exit 2; }
    on_all "cd $remote_dir && .venv/bin/onesearch $(quoted "$@") --multiprocess 2>&1 | tee ~/onesearch-run.log"
    ;;
  logs)
    "${gcloud_tpu[@]}" ssh "$TPU_NAME" --worker=0 --command="tail -n 200 -f ~/onesearch-run.log"
    ;;
  delete)
    "${gcloud_tpu[@]}" delete "$TPU_NAME" --quiet
    ;;
  *)
    echo "usage: launch/tpu_pod.sh create|install|copy DIR...|run COMMAND [FLAGS]|logs|delete (see the header)" >&2
    exit 2
    ;;
esac
