"""Several processes started by torchrun: the process group, each process's share of the work, and gathering.

    torchrun --nproc_per_node 2 -m train ...           # or -m train.evaluate, -m train.audit
    torchrun --nnodes 2 --node_rank 0 --rdzv_endpoint HOST:29500 --nproc_per_node 8 -m train ...

Started by torchrun, a process finds RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its
environment and joins one process group (`start`): NCCL when it computes on a GPU, gloo on a CPU. Started
without torchrun it is a world of one, and every call here does nothing but hand its input back, so a
single process runs exactly as it would without this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol


@dataclass(frozen=True)
class World:
    """This process's place among those started together (rank 0 of 1 for a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous block of `n` items (blocks differ in length by at most one)."""
        return block(n, self.size, self.rank)

    def all_gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def gather(self, obj) -> list | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (what the others pass is ignored)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the ranks, in place."""
        if self.size > 1:
            dist.all_reduce(t)
        return t

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Replace every floating-point buffer (batch-norm running statistics) by its mean over the ranks.

        Each rank's batch norm measures its own share of a batch; averaged, the running means are those of
        the whole batches, and the ranks hold one model again."""
        if self.size == 1:
            return
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(self.size)


class WholeBatchNorm2d(torch.nn.BatchNorm2d):
    """Batch norm over the whole batch when each process holds a share of it, for processes on the CPU.

    torch.nn.SyncBatchNorm does this on GPUs only (its kernels are CUDA's). Here each channel's count, sum
    and sum of squares (in float64) are added up over the processes with torch's differentiable all-reduce,
    so the normalisation, its gradients and the running statistics are those of one process on the whole
    batch. Its state (weight, bias, running statistics) is a BatchNorm2d's, under the same names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        count = torch.full((1,), x.numel() // c, dtype=torch.float64, device=x.device)
        local = torch.cat([x.sum(dims, dtype=torch.float64), x.square().sum(dims, dtype=torch.float64), count])
        total = funcol.all_reduce(local, "sum", dist.group.WORLD)
        n = total[2 * c]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean.square()).clamp_min(0)  # biased, as batch norm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        scale = torch.rsqrt(var + self.eps).float()
        shift = -mean.float() * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (x.float() * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)).to(x.dtype)


def whole_batch_norm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` with every batch norm measuring the whole batch over the processes: torch.nn.SyncBatchNorm
    on a GPU, WholeBatchNorm2d on the CPU. The same parameters and buffers are kept (an optimiser built on
    them stays valid) under the same state_dict keys."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = WholeBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=device)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            whole_batch_norm(child, device)
    return module


def block(n: int, parts: int, k: int) -> range:
    """The k-th of `parts` contiguous blocks of range(n), the first n % parts of them one longer."""
    step, extra = divmod(n, parts)
    start = k * step + min(k, extra)
    return range(start, start + step + (k < extra))


def launched() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def start(device: str | torch.device = "cpu") -> World:
    """Join torchrun's process group (NCCL for a GPU device, gloo for the CPU) and say where this process is.

    Without torchrun: a world of one, no process group. A CUDA device becomes this process's own GPU
    (`cuda:LOCAL_RANK`): see `device_for`."""
    if not launched():
        return World()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(local)  # the object collectives use the current device
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return World(rank=rank, size=size, local_rank=local)


def device_for(device: str, world: World) -> torch.device:
    """The device this rank computes on: its own GPU (by local rank) when `device` names CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda" and world.size > 1 and dev.index is None:
        return torch.device("cuda", world.local_rank)
    return dev


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
