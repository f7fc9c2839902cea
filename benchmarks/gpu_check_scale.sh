#!/usr/bin/env bash
# GPU checks of issue #15 (cohort scale), to be run by benchmarks/gpu_check.sh on a machine with
# one CUDA GPU, from the repository root, with the project's Python environment active
# (PY=/path/to/python to choose another). Results are appended to benchmarks/RESULTS.md;
# generated data go to /tmp (CRCRS_SCALE_DATA to change), never into the repository.
#
# Parts and wall-time limits (the whole file about 7 minutes at most; the two benchmark rows
# are what matter, the tests are a quick correctness check on the device):
#   1. gpu-marked tests of the cached / streamed / GPU-resident paths and the chunked step (60 s)
#   2. full-bag step memory on the device, 10k .. 1M tiles, default and never chunked (60 s)
#   3. bf16 autocast vs fp32 C-index on 5 small cohorts (60 s)
#   4. the GPU row: 5-fold fit of 1,000 patients x 10k tiles x 1,024-d with the library's
#      defaults and all epochs (the target: <= 2 min load included, >= 5 M training
#      instances/s). Writing the 20 GB cohort with the simulator is the slow part: 100 patients
#      are simulated and each is copied 9 more times with its own tile order and outcome
#      (--templates 100, written by 16 processes). (240 s)
set -uo pipefail
PY=${PY:-python}
DATA=${CRCRS_SCALE_DATA:-/tmp/crcrs_cohort_scale}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

echo "== scale 1/4: gpu-marked tests"
timeout 60 "$PY" -m pytest -q -m gpu tests/test_feature_cache.py tests/test_chunked.py || status=1

echo "== scale 2/4: full-bag step memory on cuda"
timeout 60 "$PY" benchmarks/bag_memory.py --device cuda --threads 8 \
    --sizes 10000 200000 400000 1000000 --plain-max 400000 || status=1

echo "== scale 3/4: bf16 autocast and the C-index on cuda"
timeout 60 "$PY" benchmarks/precision_c.py --device cuda --seeds 5 \
    || status=1

echo "== scale 4/4: cohort scale, 1,000 x 10k x 1,024 on cuda"
timeout 240 "$PY" benchmarks/cohort_scale.py --patients 1000 --tiles 10000 --dim 1024 \
    --device cuda --threads 8 --jobs 16 --templates 100 --data "$DATA" || status=1

exit $status
