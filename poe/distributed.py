"""Several processes training together, launched by `torchrun` (PyTorch's DistributedDataParallel).

    torchrun --standalone --nproc_per_node 2 Run_preprocessing.py --dataset demo        # one machine
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
        --nproc_per_node 8 Run_preprocessing.py --dataset cifar100 --data_root DIR        # two machines

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup()` joins the process
group from them (env:// rendezvous; gloo on CPU, NCCL on GPU). Without torchrun a process is a world
of one and every helper here is a no-op, so the same code runs both ways.

What runs where (see README): the Oracle and the library student train data-parallel (`wrap`: each
rank a shard of every global batch, gradients averaged by DDP); experts are divided among the ranks
by task, each rank training its own from the shared feature cache. Rank 0 alone writes shared files
(checkpoints, resume files, histories) and prints.
"""
from __future__ import annotations

import builtins
import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .errors import PoEError

# Ranks wait for each other where the work is uneven: rank 0 scoring an epoch or writing a
# checkpoint, ranks building different feature-cache views or training different experts (hours on
# ImageNet). torch's default (30 min for gloo, 10 for NCCL) would kill such a wait.
TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class World:
    """The processes that train one model together: this one is `rank` of `size`."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


ALONE = World()  # a process on its own (also each rank training its own experts)


def launched() -> bool:
    """Started by torchrun (or another env:// launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return ALONE


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group, if launched by it; returns this process's device (a GPU
    process takes the GPU of its LOCAL_RANK). Ranks other than 0 print nothing to stdout."""
    if not launched() or dist.is_initialized():
        return device
    if not dist.is_available():
        raise PoEError("this PyTorch build has no torch.distributed: run without torchrun")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise PoEError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s): "
                           "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=TIMEOUT)
    if dist.get_rank() != 0:
        _quiet()
    return device


def _quiet() -> None:
    """This rank prints nothing to stdout and shows no progress bars (errors still reach stderr),
    as torchvision's reference scripts do."""
    from tqdm import tqdm

    bar_init = tqdm.__init__

    def quiet_bar(self, *args, **kwargs):
        kwargs["disable"] = True
        bar_init(self, *args, **kwargs)

    tqdm.__init__ = quiet_bar
    bar_write = tqdm.write

    def write_to_stderr_only(s, file=None, **kwargs):
        if file not in (None, sys.stdout):
            bar_write(s, file=file, **kwargs)

    tqdm.write = write_to_stderr_only
    plain = builtins.print

    def print_to_stderr_only(*args, **kwargs):
        if kwargs.get("file") not in (None, sys.stdout):
            plain(*args, **kwargs)

    builtins.print = print_to_stderr_only


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` on `device` (channels-last), inside DistributedDataParallel when several processes
    train it. Call it through the returned module so DDP averages the gradients; BatchNorm keeps
    per-rank batch statistics (rank 0's running statistics are broadcast each step), as
    torchvision's reference does without --sync-bn."""
    model.to(device, memory_format=torch.channels_last)
    if world().size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_data_parallel(model: nn.Module) -> bool:
    return isinstance(model, DistributedDataParallel)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(values: list[float] | torch.Tensor) -> torch.Tensor:
    """The element-wise sum over all ranks (float64 on the CPU; the values themselves when alone)."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if world().size == 1:
        return t
    t = t.to(_device())
    dist.all_reduce(t)
    return t.cpu()


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def main_writes(write) -> None:
    """Rank 0 alone calls `write()` (saving shared files). Every rank first waits until all have
    looked at the files as they were (their decisions agree), and after until they are written."""
    barrier()
    if world().is_main:
        write()
    barrier()


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def sync_from_main(model: nn.Module) -> None:
    """Every rank's `model` becomes rank 0's, parameters and buffers. After DDP training the
    parameters agree, but each rank's BatchNorm running statistics are those of its own last batch
    (DDP broadcasts rank 0's at the start of a forward, not after it): without this the ranks would
    go on with different models (teachers, cache keys) from the one rank 0 stores."""
    if world().size == 1:
        return
    device = _device()
    for value in model.state_dict().values():
        if value.device == device:
            dist.broadcast(value, src=0)
        else:  # e.g. a CPU tensor in an NCCL group
            moved = value.to(device)
            dist.broadcast(moved, src=0)
            value.copy_(moved)


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if world().size == 1:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, w: World) -> slice:
    """Rank w.rank's part of a global batch of n: contiguous, sizes differing by at most one, so
    the ranks' parts joined in rank order are the global batch."""
    base, extra = divmod(n, w.size)
    start = w.rank * base + min(w.rank, extra)
    return slice(start, start + base + (w.rank < extra))


def mine(items: list, w: World | None = None) -> list:
    """The items this rank takes when a list of independent jobs is divided among the ranks."""
    w = w or world()
    return items[w.rank::w.size]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_suffix(world: World) -> str:
    """File-name part of a rank's own files when the ranks train different experts ('' alone)."""
    return f".rank{world.rank}of{world.size}" if world.size > 1 else ""
