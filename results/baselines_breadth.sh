#!/bin/sh
# Issue 18, breadth: Transfer and CKD on 16 queries, 4 drawn (seeded) per n(Q) = 2, 3, 4, 5 from the paper's
# six tasks, on the authors' published pool (CKD taught by its library student: it ships no Oracle) and on our
# re-released pool (CKD taught by our Oracle, the paper's teacher); the report gives mean ± standard deviation
# per n(Q) and a per-query scatter plot (PoE against Transfer and CKD, <json name>_scatter.png). Curves and
# crossings are read on a validation split (50 training images per class, held out of the baselines' training);
# final accuracies on the test set, last epoch. The whole-network methods stay at one query per n(Q):
# results/baselines_cifar100.sh.
#
#   sh results/baselines_breadth.sh                   # CIFAR-100, both pools, one process
#   NPROC=2 sh results/baselines_breadth.sh           # the queries divided among 2 processes (torchrun)
#   sh results/baselines_breadth.sh demo [DIR]        # the same two commands on the demo, a tiny budget, in DIR
#
# AMP (default none: no bf16 units on the 2-core CPU here), THREADS (default: the cores / NPROC).
# Estimated from the first study's per-query times (bf16, 2 cores: 56 / 87 / 148 / 222 s for Transfer + CKD
# at n(Q) = 2 / 3 / 4 / 5, i.e. about 35 min per pool) and this CPU's fp32 speed (about 4.5x slower on the
# heads, measured at 1 thread): about 2.5-3 h per pool in fp32 here, 5-6 h for both (our pool's CKD also
# runs the Oracle over 5 views). A rerun only evaluates.
set -e
cd "$(dirname "$0")/.."
NPROC=${NPROC:-1}
AMP=${AMP:-none}
THREADS=${THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
if [ "$NPROC" -gt 1 ]; then RUN="python -m torch.distributed.run --standalone --nproc_per_node $NPROC"; else RUN=python; fi

if [ "${1:-cifar100}" = demo ]; then
    OUT=${2:-/tmp/poe_breadth_demo}
    mkdir -p "$OUT"
    [ -f DB_PoE/demo/manifest.json ] || python Run_preprocessing.py --dataset demo --amp "$AMP" --threads "$THREADS"
    COMMON="--dataset demo --queries 4 --query_seed 0 --sizes 2 3 4 5 --methods Transfer CKD --epochs_head 3
            --cache_views 2 --amp $AMP --threads $THREADS"
    $RUN Run_Baselines.py $COMMON --db DB_PoE/demo --teacher library-student --out "$OUT/models" \
        --json "$OUT/breadth_student.json" --markdown "$OUT/breadth_student.md"
    $RUN Run_Baselines.py $COMMON --db DB_PoE/demo --pretrained_db DB_pretrained/demo --teacher oracle \
        --out "$OUT/models" --json "$OUT/breadth_oracle.json" --markdown "$OUT/breadth_oracle.md"
    exit 0
fi

COMMON="--dataset cifar100 --data_root ../shared/data --queries 4 --query_seed 0 --sizes 2 3 4 5
        --methods Transfer CKD --epochs_head 30 --batch_size 128 --amp $AMP --threads $THREADS"
$RUN Run_Baselines.py $COMMON --db ../shared/reference/poe-authors/CIFAR100 --teacher library-student \
    --json results/baselines_cifar100_breadth_authors.json --markdown results/baselines_cifar100_breadth_authors.md
$RUN Run_Baselines.py $COMMON --db DB_PoE/cifar100 --pretrained_db DB_pretrained/cifar100 --teacher oracle \
    --json results/baselines_cifar100_breadth_ourpool.json --markdown results/baselines_cifar100_breadth_ourpool.md
