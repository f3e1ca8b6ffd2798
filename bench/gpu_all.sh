#!/usr/bin/env bash
# Every measurement that waits for a GPU machine, in one go:
#
#     bash bench/gpu_all.sh                 # every entry
#     bash bench/gpu_all.sh ddp_scaling     # only the entries named
#
# Each entry is a shell function below that prints its results (markdown tables for docs/benchmarks.md);
# its output is also kept in bench/results/<entry>.txt ($RESULTS to change). To add a measurement, write a
# function and append its name to ENTRIES. An entry that fails is reported and the others still run.
#
# On one H200 the whole script should take about 9 minutes: an estimate from the first run (2026-12-04), whose
# entries ran under caps and some were cut (docs/benchmarks.md). `python` must be the interpreter that has torch with CUDA: on this workplace's GPU
# machine that is /opt/torch/.venv/bin (put it first on PATH), with netspec on PYTHONPATH and its own
# dependencies (lark, pydantic, graphviz) carried as wheels, since that machine reaches no package index.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results}
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")

# Data-parallel scaling (issue 16): images/s of `netspec train` on 1 GPU against all of them (weak scaling:
# the same batch per GPU), ResNet-18 on synthetic 224x224 images (4,096 an epoch, so 128 per GPU keeps a few
# steps an epoch on 8 GPUs), then LeNet on MNIST-sized ones.
ddp_scaling() {
    if [ "$GPUS" -lt 2 ]; then
        echo "only $GPUS GPU here: the 1-GPU figures alone (scaling needs 2 or more)"
    fi
    local repeats=3
    [ "$GPUS" -lt 2 ] && repeats=1  # one configuration alone: nothing to alternate with
    python bench/ddp_speed.py --device cuda --nproc "$GPUS" --spec specs/resnet18.net --set classes=10 \
        --batch-size 128 --epochs 6 --repeats "$repeats"
    python bench/ddp_speed.py --device cuda --nproc "$GPUS" --spec specs/lenet.net --batch-size 512 \
        --epochs 6 --repeats "$repeats"
}

# Training throughput of compiled specs against torchvision's models, eager and torch.compile (bf16 autocast,
# channels_last): ResNet-50 at 224x224 and ResNet-18 at 32x32 (issue 5's bar: ratio >= 0.99).
torch_training() {
    python bench/torch_speed.py gpu --steps 30 --repeats 3
}

# onnxruntime's CUDA provider against PyTorch eager, batch 1 and 64 (needs the onnx-gpu extra). Without the
# provider the CPU figures (already in docs/benchmarks.md) are not worth the machine's time.
onnx_cuda() {
    if ! python -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())"; then
        echo "onnxruntime here has no CUDAExecutionProvider (install the onnx-gpu extra): skipped"
        return 1
    fi
    python bench/onnx_speed.py specs/resnet50.net --batches 1 64
}

# LeNet on MNIST to 99 %: netspec's trainer against a hand-written loop, eager and compiled. DATA_DIR must
# hold mnist/ (a copy of shared/data: the GPU machine reaches nothing outside it).
lenet_time_to_99() {
    python bench/train_speed.py --data-dir "${DATA_DIR:-shared/data}" --repeats 3
    python bench/train_speed.py --data-dir "${DATA_DIR:-shared/data}" --repeats 1 --compile
}

# CapsNet with its decoder on all of MNIST toward the paper's 99.5 % (its recipe's 10 epochs took 58 s with
# start-up on an H200; CAPSNET_SECONDS caps the run).
capsnet_to_99_5() {
    timeout "${CAPSNET_SECONDS:-120}" python -m netspec train specs/capsnet.net --data-dir "${DATA_DIR:-shared/data}" --device cuda \
        --out "$RESULTS/capsnet-run" --no-progress
    tail -n 3 "$RESULTS/capsnet-run/metrics.jsonl"
}

# Streamed image files (issue 17): netspec's loader against torchvision's ImageFolder + DataLoader on a generated
# JPEG tree, same workers and transforms, with the GPU machine's cores (CPU work: it needs no GPU, but the
# 2-core development machine cannot show how it scales with workers).
streamed_data() {
    python bench/stream_speed.py --workers 8 --repeats 3
}

ENTRIES=(torch_training onnx_cuda lenet_time_to_99 ddp_scaling capsnet_to_99_5 streamed_data)

mkdir -p "$RESULTS"
status=0
for entry in "${@:-${ENTRIES[@]}}"; do
    echo "== $entry ($(date -u +%Y-%m-%dT%H:%MZ), $GPUS GPU(s))"
    if ! "$entry" 2>&1 | tee "$RESULTS/$entry.txt"; then
        echo "== $entry FAILED" >&2
        status=1
    fi
done
exit $status
