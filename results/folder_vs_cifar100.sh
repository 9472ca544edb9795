#!/bin/sh
# Proof on real images: PoE built with `--dataset folder` on a PNG copy of CIFAR-100's six paper
# tasks (30 classes, all their 15,000 training and 3,000 test images) against `--dataset cifar100
# --restrict_to` the same six tasks, with the same networks, budget and seeds (0 and 1 of each: the
# spread between seeds is the run-to-run noise the two are compared against). Writes
# results/folder_vs_cifar100.{md,json}.
#
# Budget: CIFAR-100's CPU budget (Oracle WRN-16-4, library student WRN-16-1, batch 128, cosine) cut to
# 4 Oracle and 4 student epochs, experts 10 epochs over 5 cached views; bf16 autocast where the CPU
# (or GPU) computes it fast (AMP=auto: AVX512-BF16/AMX; on a CPU without them bf16 is emulated and many
# times slower than fp32, so auto then trains in fp32; AMP=bf16 forces it). Run from the project root:
#     sh results/folder_vs_cifar100.sh
# Time: four runs of about 25 min each on the 2-core AVX2 CPU with nothing else running, in fp32 (it
# has no bf16 units), about 10 min where bf16 is fast: an estimate from the 1-epoch check below (Oracle
# 22 img/s on one starved thread) and results/pipeline_cifar100_stages.md, not a measurement.
# Variables (environment): DATA (holds cifar-100-python/; default ../shared/data), PNG (the PNG
# folder, outside the repository; default ../cifar30_png), OUT (pools and reports; default
# DB_PoE/folder_vs_cifar100), FOLDER_SEEDS and CIFAR_SEEDS (default "0 1" each; FOLDER_SEEDS=0 saves a
# run, the noise then measured on cifar100's two seeds alone), TASKS (CIFAR-100 superclasses; default
# the paper's six), EPOCHS, AMP, EXTRA (more flags for every tool, e.g. "--threads 2"), PY. A check of the script
# itself at a 1-epoch budget on two tasks (10 classes):
#     TASKS="people vehicles_1" PNG=/tmp/cifar10_png OUT=/tmp/folder_vs_cifar100 RESULT=/tmp/folder_vs_cifar100 \
#         EPOCHS="--epochs_oracle 1 --epochs_library 1 --epochs_expert 1" EXTRA="--threads 1" \
#         sh results/folder_vs_cifar100.sh
# It ran end to end so, each run in 5-6 min on a shared, loaded 2-core machine at nice 19 (the
# 1-epoch figures are near chance and say nothing). Rerunning skips every pool already built.
set -eu
PY=${PY:-python}
DATA=${DATA:-../shared/data}
PNG=${PNG:-../cifar30_png}
OUT=${OUT:-DB_PoE/folder_vs_cifar100}
RESULT=${RESULT:-results/folder_vs_cifar100}
FOLDER_SEEDS=${FOLDER_SEEDS:-0 1}
CIFAR_SEEDS=${CIFAR_SEEDS:-0 1}
EPOCHS=${EPOCHS:---epochs_oracle 4 --epochs_library 4 --epochs_expert 10}
AMP=${AMP:-auto}
EXTRA=${EXTRA:-}
TASKS=${TASKS:-large_omnivores_and_herbivores medium-sized_mammals people small_mammals vehicles_1 vehicles_2}
BUDGET="--budget cpu $EPOCHS --cache_views 5 --val_per_class 0 --amp $AMP"  # as designed: no hold-out, 5 views

$PY tools/cifar100_to_png.py --data_root "$DATA" --out "$PNG" --tasks $TASKS

build() {  # arm seed dataset-flags...
    arm=$1 seed=$2
    shift 2
    $PY Run_preprocessing.py "$@" --db "$OUT/${arm}_seed$seed" --pretrained_db "$OUT/${arm}_seed$seed/pretrained" \
        --seed "$seed" $BUDGET $EXTRA --json "$OUT/${arm}_seed$seed.json"
    $PY Run_Table6.py "$@" --db "$OUT/${arm}_seed$seed" --label "$arm, seed $seed" $EXTRA \
        --json "$OUT/${arm}_seed$seed.table6.json"
}
for seed in $FOLDER_SEEDS; do
    build folder "$seed" --dataset folder --data_root "$PNG"
done
for seed in $CIFAR_SEEDS; do
    build cifar100 "$seed" --dataset cifar100 --restrict_to $TASKS --data_root "$DATA"
done
$PY tools/compare_folder_cifar100.py "$OUT" --json "$RESULT.json" --markdown "$RESULT.md"
