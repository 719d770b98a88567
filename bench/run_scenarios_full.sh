#!/usr/bin/env bash
# Full failure-scenario benchmark on the embedded phantom CXR cohort (Open-i reports, rendered images).
#
#   bash bench/run_scenarios_full.sh [OUT_ROOT] [RUNS] [WORKERS] [STABILITY_RUNS]   (PYTHON=... to pick the interpreter)
#
# Pass 1 ("main"): the study's grid: 3 scenarios x test-slice shares 5/10/20% x RUNS seeds, 7 modality
#   variants x {concat, balanced}, study slicer setting (weights 10, 20 components, 5 slices, PCA 128,
#   one EM start as Domino), Domino 0.1.5 as a peer on image and image+report+metadata (if its env builds).
# Pass 2 ("stability"): the noisy-label scenario at 10% with 3 slicer seeds per fit, study setting (1 EM
#   start) vs the fix (10 restarts), both fusions: measures slicer instability.
# Both passes are resumable: rerun the same command to finish an interrupted run. Cohort, rendered
# images and embeddings are cached under OUT_ROOT/cache and shared by the passes.
set -euo pipefail
out=${1:-bench-out/scenarios}
runs=${2:-10}
workers=${3:-2}
stab_runs=${4:-20}
py=${PYTHON:-python}
cache="$out/cache"
export MEDAUDIT_QUIET=${MEDAUDIT_QUIET:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}  # EM convergence warnings, one per fit
run() { "$py" -m medaudit.cli bench-scenarios "$@"; }
echo "load before: $(uptime)"
t0=$(date +%s)
run --out "$out/main" --cache-dir "$cache" --runs "$runs" --workers "$workers" --peer-domino
t1=$(date +%s)
echo "main pass: $((t1 - t0)) s; load: $(uptime)"
run --out "$out/stability" --cache-dir "$cache" --scenarios noisy --shares 0.10 --runs "$stab_runs" \
  --workers "$workers" --variants image,metadata,image+report+metadata --slicer-configs study,restarts \
  --slicer-seeds 3
t2=$(date +%s)
echo "stability pass: $((t2 - t1)) s; load: $(uptime)"
