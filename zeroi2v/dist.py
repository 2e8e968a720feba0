"""Distributed helpers: one process or many under torchrun (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from zeroi2v.errors import UserError


def setup_distributed(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: init the process group (NCCL on GPU, gloo on CPU).

    `device` ("cpu", "cuda", "cuda:1") overrides the automatic choice; a GPU that is not there is a
    one-line error."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r}: not a device (cpu, cuda, cuda:N)") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is available on this machine")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    if "RANK" not in os.environ or dist.is_initialized():
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return rank, world, torch.device(device) if device else auto
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device("cpu")


def all_sum(values: list[float], device) -> list[float]:
    """Element-wise sum over all processes (the values themselves with one process)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def interactive() -> bool:
    """Progress bars only for a person watching a terminal (not in logs, CI or pipes)."""
    return sys.stderr.isatty() and not os.environ.get("CI")
