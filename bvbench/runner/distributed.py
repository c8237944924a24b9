"""Distributed training under torchrun: the process group, the DDP wrapper and barriers (no-ops alone)."""

from __future__ import annotations

import os

import torch
from torch import nn

from bvbench.train.trainer import Dist


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    import torch.distributed as tdist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=tdist.get_rank(), world=tdist.get_world_size(), local=local, cuda=device.type == "cuda"), device


class DistContext(Dist):
    """Dist plus the DDP wrapper and barriers (no-ops in a single process)."""

    def __init__(self, rank: int = 0, world: int = 1, local: int = 0, cuda: bool = False) -> None:
        super().__init__(rank, world)
        self.local, self.cuda = local, cuda

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world <= 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Quantizers with lazily initialised scales may sit unused in a stage: let DDP tolerate that.
        return DDP(model, device_ids=[self.local] if self.cuda else None, find_unused_parameters=True)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()
