#!/usr/bin/env bash
# Local CPU run of what the pipeline has today: generate a world and validate it.
#   launch/local_cpu.sh OUT_DIR [--gin.WorldConfig.num_items=5000 ...]
# Uses the project's .venv (created by `make demo` or `make test`).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: launch/local_cpu.sh OUT_DIR [gin overrides]}"
shift
"$here/.venv/bin/onesearch" world --output_dir="$out/world" --gin_search_paths="$here" \
  --gin_file=gin/world/default.gin "$@"
"$here/.venv/bin/onesearch" data validate "$out/world/kuaisearch" --report_json="$out/world/validation.json"
