#!/usr/bin/env bash
# The device check: run on a lent GPU machine (benchkit is not installed there and nothing can be
# fetched). Installs benchkit from the working tree without dependencies, runs the CUDA paths of
# the test suite, then the speed benchmark at the paper preset. Logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 BENCHKIT_CACHE=/tmp/benchkit-cache
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# The image's setuptools may predate SPDX license strings: use the table form on this copy only.
sed -i 's/^license = "MIT"/license = { text = "MIT" }/; s/^requires = \["setuptools>=77"\]/requires = ["setuptools"]/' pyproject.toml
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -3
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/test_cli.py tests/test_strategies.py \
    tests/test_backbones.py tests/test_evaluate.py 2>&1 | tail -15 | tee "$OUT/pytest.txt"
timeout 300 python3 benchmarks/train_speed.py --presets paper \
    --backbones cmvae,cmvae+debcm,cmvbr,cevar --epochs 2 --baseline-batches 30 \
    --skip memory 2>&1 | tee "$OUT/train_speed.txt" | grep -v "^{" | tail -40
