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


def test_build_from_passes_only_the_keywords_a_constructor_names():
    registry = Registry("thing")
    registry.register("pair")(lambda a, b=2: (a, b))
    assert registry.build_from("pair", 1, b=3, unused=4) == (1, 3)
    with pytest.raises(TypeError):
        registry.build("pair", 1, unused=4)


def test_parts_refuse_a_misspelled_keyword():
    # They took **_ and dropped a typo silently; a direct call must fail instead.
    from hjepa.models.predictor import PREDICTORS
    from hjepa.models.view_predictor import VIEW_PREDICTORS

    for name in PREDICTORS.names():
        with pytest.raises(TypeError):
            PREDICTORS.build(name, 8, (4, 4), predictor_dimm=8)
    for name in VIEW_PREDICTORS.names():
        with pytest.raises(TypeError):
            VIEW_PREDICTORS.build(name, 8, hidden_dimm=8)
