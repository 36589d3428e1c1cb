"""Every script reply is checked for shape before it is used: a mismatch is a ScriptError,
never an IndexError or a wrong answer."""

from __future__ import annotations

from typing import Any

import pytest

from flue_models.errors import ScriptError
from flue_models.scripts import checked_reply

SHAPES = {"ok": 3, "conflict": 2}


@pytest.mark.parametrize(
    "reply",
    [b"ok", 1, None, [], [1, 2, 3], [b"ok"], [b"ok", 1], [b"conflict"], [b"surprise", 1, 2, 3]],
    ids=repr,
)
def test_a_reply_of_another_shape_is_a_script_error(reply: Any) -> None:
    with pytest.raises(ScriptError, match="another shape"):
        checked_reply("save", reply, SHAPES)


def test_a_reply_of_the_right_shape_is_returned_with_its_status() -> None:
    assert checked_reply("save", [b"ok", 1, 2], SHAPES) == ("ok", [b"ok", 1, 2])
    assert checked_reply("save", ["conflict", 1, 7], SHAPES) == ("conflict", ["conflict", 1, 7])
