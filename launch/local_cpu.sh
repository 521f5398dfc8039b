#!/usr/bin/env bash
# The end-to-end pipeline on this machine's CPU (what `make demo` runs): world -> keywords -> SIDs ->
# records -> SFT -> LR-ESD -> TPMA-GRPO -> evaluation, then the ablation table.
#   launch/local_cpu.sh [OUT_DIR] [--gin.DemoConfig.ablation_gin="'gin/demo/ablation.gin'" ...]
# Stages whose outputs are up to date are skipped (stamps in OUT_DIR/stamps). Uses the project's
# .venv (created by `make demo` or `make test`). XLA_FLAGS=--xla_force_host_platform_device_count=N
# splits the CPU into N devices for the training runs (gin/launch/cpu.gin).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-demo_output}"
shift || true
exec "$here/.venv/bin/onesearch" demo --output_dir="$out" --gin_search_paths="$here" "$@"
