#!/bin/sh
# Tiny-ImageNet through the same command: a smoke test, not a result. The shared copy holds only 20
# training images per class (the full val set), so the numbers say nothing of the method.
python Run_Baselines.py --dataset tinyimagenet --data_root ../shared/data \
    --db ../shared/reference/poe-authors/TinyImageNet --teacher library-student \
    --queriedTask canine feline --epochs_network 1 --epochs_head 1 --amp bf16 --threads 2 \
    --json results/baselines_tinyimagenet_smoke.json --markdown results/baselines_tinyimagenet_smoke.md
