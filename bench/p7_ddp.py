"""P7: what data-parallel training (torchrun, DDP over gloo) gives on this machine.

One epoch of the demo Oracle (WRN-16-2) over the first --images demo training images at a global
batch of --batch, trained by poe.train.fit: once in one process with --threads threads, once as
2 torchrun processes with --threads/2 threads each (the same cores). Reports images/s (fit's own
timing of the epoch, all ranks' images) and the wall time of each command (imports included).

    python bench/p7_ddp.py                       # 1024 images, batch 128, 2 threads
    python bench/p7_ddp.py --images 2880 --json p7.json
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(out: Path, images: int, batch: int, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from Demo import PROFILE
    from poe import distributed
    from poe.data import ArrayDataset
    from poe.profiles import Budget
    from poe.train import fit

    device = distributed.setup(torch.device("cpu"))
    torch.set_num_threads(threads)
    train = PROFILE.load()[0]
    train = ArrayDataset(train.images[:images], train.labels[:images])
    torch.manual_seed(0)
    model = PROFILE.architecture.oracle()
    net = distributed.wrap(model, device)
    loader = PROFILE.train_loader(train, batch, seed=0, world=distributed.world())
    history = fit(net, lambda x, y: F.cross_entropy(net(x), y), loader, Budget(1, 0.1, ()),
                  resume_path=out / "resume.pt", signature={}, device=device, desc="p5")
    if distributed.world().is_main:
        (out / "result.json").write_text(json.dumps(history[-1]))
    distributed.cleanup()


def measure(cmd: list[str], out: Path) -> dict:
    tic = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    record = json.loads((out / "result.json").read_text())
    return {"images_per_s": record["images_per_s"], "epoch_s": record["seconds"],
            "wall_s": round(time.perf_counter() - tic, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(Path(args.worker), args.images, args.batch, args.threads)
    common = ["--images", str(args.images), "--batch", str(args.batch)]
    rows = {}
    with TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        one.mkdir(), two.mkdir()
        rows["1 process"] = measure([sys.executable, __file__, "--worker", str(one), *common,
                                     "--threads", str(args.threads)], one)
        rows["2 processes (torchrun, gloo)"] = measure(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
             "--worker", str(two), *common, "--threads", str(max(1, args.threads // 2))], two)
    print(f"P7: one epoch of WRN-16-2 on {args.images} demo images, global batch {args.batch}, "
          f"{args.threads} threads in all")
    print("| run | images/s | epoch (s) | command wall (s) |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['images_per_s']:.1f} | {r['epoch_s']:.1f} | {r['wall_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
