"""Device choice in one place: ``auto`` picks CUDA when present, otherwise the CPU; and host-to-device copies that do
not synchronise."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch

from hjepa.errors import HJEPAError


class DeviceUnavailableError(HJEPAError, RuntimeError):
    """A device was asked for that this machine does not have."""


def check_device_name(name: str) -> str:
    """``name`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else DeviceUnavailableError saying so.

    torch accepts more names (``mps``, ``meta``, ``xla`` ...) that no hjepa code path runs on; they are refused here,
    once for every command, rather than failing deep inside torch or being taken as ``auto`` by a provider choice.
    """
    if str(name) in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(name)):
        return name
    raise DeviceUnavailableError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as given (checked)."""
    if check_device_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} asked for, but CUDA is not available on this machine; use cpu")
    return device


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without a host sync: a CPU tensor bound for CUDA goes through pinned memory with
    ``non_blocking=True`` (a blocking copy from pageable memory waits for the stream, i.e. for every kernel queued);
    a tensor already pinned (a ``DataLoader(pin_memory=True)`` batch) is not copied again on the host."""
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 matmuls run several times faster
    than fp32; elsewhere they are emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def amp_enabled(device: torch.device, amp: bool, cpu_amp: str = "auto") -> bool:
    """Whether the training forward runs under bf16 autocast: ``amp`` on CUDA; ``cpu_amp`` (auto | on | off) on the
    CPU, where ``auto`` means a CPU with native bf16."""
    if device.type == "cuda":
        return amp
    return cpu_amp == "on" or (cpu_amp == "auto" and cpu_has_native_bf16())
