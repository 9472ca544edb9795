#!/bin/sh
# Issue 18: Transfer and CKD against the independent minimal implementation, at the issue's settings
# (the authors' pool, people + vehicles_1, a head trained 30 epochs on the frozen library, lr 0.1 x0.1 at
# 12 and 24, batch 512, the library recomputed every batch, every training image as the minimal one had),
# three seeds (data order, augmentation, new weights), with PyTorch's init (the default since this issue)
# and with the authors' WRN init (what the study used before). The minimal implementation gave 68.2-68.6 %
# (two runs, bf16); our Transfer with the authors' init 61.0 % (one run, bf16), CKD 68.2 vs 65.4 %.
#
#   sh results/baselines_transfer_seeds.sh            # AMP=none THREADS=2 by default (bf16: AMP=bf16)
#
# Estimated on the 2-core CPU here in fp32, from 1-thread timings under load (library forward 20 s and head
# 6.5 s per epoch of 5,000 images): 5-7 min per training with 2 free threads, 1-1.5 h for the 12.
# Each run is stored in DB_baselines/cifar100 (a rerun only evaluates); the table at the end reads the JSONs.
set -e
cd "$(dirname "$0")/.."
AMP=${AMP:-none}
THREADS=${THREADS:-2}
INITS=${INITS:-torch authors}  # INITS=torch: only PyTorch's init (half the time)
OUT=results/baselines_transfer_seeds
mkdir -p "$OUT"
for init in $INITS; do
    for seed in 0 1 2; do
        python Run_Baselines.py --dataset cifar100 --data_root ../shared/data \
            --db ../shared/reference/poe-authors/CIFAR100 --queriedTask people vehicles_1 \
            --methods Transfer CKD --teacher library-student --epochs_head 30 --batch_size 512 \
            --head_source live --val_per_class 0 --amp "$AMP" --threads "$THREADS" \
            --init "$init" --seed "$seed" --json "$OUT/$init-seed$seed.json"
    done
done
python - "$OUT" $INITS <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["| init | method | seed 0 | seed 1 | seed 2 | mean ± std | after epoch 1 (seeds) |", "|---|---|---:|---:|---:|---:|---|"]
for init in sys.argv[2:]:
    docs = [json.loads((out / f"{init}-seed{s}.json").read_text()) for s in (0, 1, 2)]
    for m in ("Transfer", "CKD"):
        rows = [d["queries"][0]["methods"][m] for d in docs]
        acc = [r["accuracy_pct"] for r in rows]
        first = [r["curve"][0].get("test_top1_pct") for r in rows]
        lines.append(f"| {init} | {m} | " + " | ".join(f"{a:.2f}" for a in acc)
                     + f" | {statistics.mean(acc):.2f} ± {statistics.stdev(acc):.2f} | "
                     + ", ".join(f"{f:.1f}" for f in first) + " |")
poe = docs[0]["queries"][0]["poe"]["accuracy_pct"]
text = "\n".join(lines) + f"\n\nPoE (the authors' pool): {poe:.2f} %. Test accuracy, last epoch of 30.\n"
(out / "table.md").write_text(text)
print(text)
PY
