#!/usr/bin/env bash
# The release-model run on a machine with a GPU, one prepared command of about 8 minutes.
# Measured on an H200 (2026-11-28): ~6,300 img/s, 4-5 s an epoch after a first one of ~20 s (cuDNN's search);
# --fit-schedule sizes the cosine schedule to MINUTES after the warm-up epochs (at most EPOCHS).
#
# First, where the data is, pack what the run reads into .data/ (training and PublicTest pictures and their
# FER+ votes, about 56 MiB; PrivateTest stays behind):
#   python -m train.pack --data FER2013_FOLDER --labels ferplus_labels.csv --out .data
# Then on the GPU machine, from the repository root with .data/ beside the code (weights/ is not read):
#   MINUTES=7 OUT=/tmp/out bash train/release_gpu.sh
# Flags go in EXTRA, e.g. layer4 dilated (its grid 4 x 4 at 64 px): EXTRA="--output-stride 16" MINUTES=12 ...
# Stage 3's posed-face recipe (teacher, app framing, anger blend) then runs on the CPU from the result: see
# docs/training.md, "The release run on a GPU".
# OUT/weights then holds the best epoch's weights as safetensors pieces of at most 15 MB (train/shards.py),
# with its config, card and results, and OUT/train.log the run. Back on the machine that ships the model:
#   python -m train.shards join OUT/weights weights     # the old model's face prior and audit are removed
#   python -m train.face_prior --weights weights --data FER2013_FOLDER   # the new model's own prior
#   python -m train.evaluate --weights weights --data FER2013_FOLDER --dataset ferplus \
#       --labels ferplus_labels.csv --split private_test --out eval/ferplus_private --card
#
# Labels: FER+ vote distributions (ferplus_labels.csv). The whole train split and PublicTest go onto the GPU once and are augmented there; bf16 autocast,
# channels_last; every epoch is logged (results.json keeps the curve); the best PublicTest epoch is kept.
set -euo pipefail
EPOCHS=${EPOCHS:-150}; SIZE=${SIZE:-64}; BATCH=${BATCH:-256}; MINUTES=${MINUTES:-7}; EXTRA=${EXTRA:-}
OUT=${OUT:-/tmp/out}
rm -rf /tmp/run /tmp/fer; mkdir -p "$OUT" /tmp/fer
python3 -m zipfile -e .data/fer2013-trainval.zip /tmp/fer
DATA=$(dirname "$(find /tmp/fer -maxdepth 3 -type d -name train | head -1)")
{ nvidia-smi --query-gpu=name,memory.total --format=csv || echo "no GPU"; python3 -c "import torch, timm; print(torch.__version__, timm.__version__)"; } 2>&1 | tee "$OUT/train.log"
PYTHONUNBUFFERED=1 python3 -m train --dataset ferplus --data "$DATA" --labels .data/ferplus_labels.csv --epochs "$EPOCHS" --size "$SIZE" --batch-size "$BATCH" \
    --warmup-epochs 2 \
    --run-dir /tmp/run --time-limit "$MINUTES" --fit-schedule --no-progress $EXTRA 2>&1 | tee -a "$OUT/train.log"
python3 -m train.shards split /tmp/run/best "$OUT/weights" --max-mb 15   # <= 16 MiB a file, <= 8 files in all
rm -f "$OUT/weights/README.md"  # rendered again here from results.json
