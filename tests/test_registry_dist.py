import pytest
import torch

from hjepa import dist
from hjepa.registry import Registry


def test_registry_registers_and_lists_valid_names_on_unknown():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        def __init__(self, x: int = 1) -> None:
            self.x = x

    assert reg.build("a", x=3).x == 3 and "a" in reg and reg.names() == ["a"]
    with pytest.raises(KeyError, match="unknown widget 'b'; valid names: a"):
        reg.get("b")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(A)


def test_dist_helpers_are_no_ops_in_one_process():
    assert not dist.is_initialized()
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    t = torch.tensor([2.0, 4.0])
    assert torch.equal(dist.all_reduce_mean(t), torch.tensor([2.0, 4.0]))
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()
    assert dist.init_distributed("cpu") is False
