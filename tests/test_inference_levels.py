"""``hjepa.inference.artifacts.levels``: the one ``--level`` parser, its syntax and its single message format."""

import numpy as np
import pytest

from hjepa.errors import HJEPAError
from hjepa.inference.artifacts.levels import LevelError, check_level, level_syntax, parse_levels


@pytest.mark.parametrize(("spec", "expected"), [
    ("all", [0, 1, 2]), (" ALL ", [0, 1, 2]), (1, [1]), (np.int64(2), [2]), ("1", [1]), ("2,0", [2, 0]),
    ("1,1,0", [1, 0]), ([0, 2], [0, 2]),
])
def test_level_specs(spec, expected):
    assert parse_levels(spec, [0, 1, 2]) == expected


@pytest.mark.parametrize("spec", ["x", "1.5", "", ",", True, 1.0, None])
def test_bad_syntax_is_a_level_error(spec):
    with pytest.raises(LevelError, match="level number|no level given"):
        parse_levels(spec, [0, 1])


@pytest.mark.parametrize("spec", [2, -1, "0,5", [1, 3]])
def test_levels_out_of_range_name_where_and_what_exists(spec):
    with pytest.raises(LevelError, match=r"is not in run/last\.pt; available levels: \[0, 1\]"):
        parse_levels(spec, [0, 1], "run/last.pt")


def test_check_level_and_syntax():
    assert check_level(np.int32(1), [1]) == 1 and isinstance(check_level(np.int32(1), [1]), int)
    with pytest.raises(LevelError, match=r"level 0 is not in level1.onnx; available levels: \[1\]"):
        check_level(0, [1], "level1.onnx")
    assert level_syntax("all") is None and level_syntax("3") == [3]  # unchecked: no levels known yet
    assert issubclass(LevelError, HJEPAError) and issubclass(LevelError, ValueError)
