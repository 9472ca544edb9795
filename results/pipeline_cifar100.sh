#!/usr/bin/env bash
# How results/pipeline_cifar100.* and the released pool (DB_pretrained/cifar100, DB_PoE/cifar100)
# were made, on a 2-core CPU with bf16 (see results/pipeline_cifar100.md). Every step skips what is
# already built, so rerunning this script only re-evaluates. DATA: the folder holding cifar-100-python/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}

# 1. The whole preprocessing at the CPU budget: Oracle, library student, library, the six experts.
python Run_preprocessing.py --dataset cifar100 --data_root "$DATA" --budget cpu \
    --json results/pipeline_cifar100.json --markdown results/pipeline_cifar100_stages.md

# 2. Mean PoE accuracy and cross-expert share over all combinations, n(Q)=2..5: ours beside the authors'.
python Run_Table6.py --dataset cifar100 --data_root "$DATA" --amp none \
    --db DB_PoE/cifar100 --label "ours (--budget cpu)" \
    --db ../shared/reference/poe-authors/CIFAR100 --label "authors' published pool" \
    --json results/pipeline_cifar100_table6.json --markdown results/pipeline_cifar100_table6.md

# 3. One query answered from the released pool (tests/test_released_pool.py checks it still is).
python Run_Service.py --dataset cifar100 --data_root "$DATA" --queriedTask people vehicles_1 vehicles_2 \
    --json results/pipeline_cifar100_query.json

# 4. Table 6 with the paper's teacher (our Oracle) on our library, at the expert budget of
#    results/table6_cifar100.md (10 epochs, 5 views); reuses step 1's feature cache.
python Run_Table6.py --dataset cifar100 --data_root "$DATA" --library_from DB_PoE/cifar100 \
    --pretrained_db DB_pretrained/cifar100 --teacher oracle --epochs_expert 10 --cache_views 5 --amp bf16 \
    --cache_dir DB_PoE/cifar100/feature_cache --out_db DB_PoE/cifar100_table6_oracle \
    --json results/table6_cifar100_oracle.json --markdown results/table6_cifar100_oracle.md
