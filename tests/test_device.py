"""Device choice (``hjepa.device``): names checked with a clear error, and copies that do not synchronise."""

import pytest
import torch

from hjepa.device import DeviceUnavailableError, resolve_device, to_device_async


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceUnavailableError, match="unknown device 'tpu7'"):
        resolve_device("tpu7")
    for name in ("mps", "meta", "gpu", "cuda:x"):  # torch names no hjepa path runs on, and typos
        with pytest.raises(DeviceUnavailableError, match=f"unknown device '{name}'; use auto, cpu, cuda or cuda:N"):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_to_device_async_is_a_no_op_on_the_same_device_and_copies_otherwise():
    x = torch.arange(6.0)
    assert to_device_async(x, torch.device("cpu")) is x  # nothing to copy, nothing to wait for
    moved = to_device_async(x, torch.device("meta"))
    assert moved.device.type == "meta" and moved.shape == x.shape


def test_cpu_autocast_follows_train_cpu_amp():
    from hjepa.device import amp_enabled, cpu_has_native_bf16

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_enabled(cpu, True, "on") and not amp_enabled(cpu, True, "off")
    assert amp_enabled(cpu, False, "auto") == cpu_has_native_bf16()
    assert amp_enabled(cuda, True, "off") and not amp_enabled(cuda, False, "on")


def test_train_step_under_cpu_autocast_keeps_the_loss_in_float32(tiny_config):
    from hjepa.train.step import autocast_context

    layer = torch.nn.Linear(8, 8)
    with autocast_context(torch.device("cpu"), True):
        out = layer(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), False):
        assert layer(torch.randn(2, 8)).dtype == torch.float32
