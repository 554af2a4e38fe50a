"""`run_name` is one name: the dir `outputs/<task>/runs/<run_name>`, never a path that leads elsewhere."""

import pytest

from hydralight.core.errors import UserError
from hydralight.core.runs.guard import check_run_name


@pytest.mark.parametrize(
    ("run_name", "says"),
    [
        ("../../x", "is a path, not a name"),
        ("a/../../b", "is a path, not a name"),
        ("/some/abs/dir", "is a path, not a name"),
        ("..", "is a path, not a name"),
        (".", "is a path, not a name"),
        ("", "is empty"),
        ("n" * 300, "is 300 bytes long; this filesystem takes names of at most"),
        ("é" * 200, "is 400 bytes long"),  # bytes, not characters, are what a filesystem counts
    ],
)
def test_a_run_name_that_is_no_plain_name_is_refused_naming_it(tmp_path, run_name, says):
    with pytest.raises(UserError, match=r"^run_name=.*" + says) as error:
        check_run_name(run_name, tmp_path / "outputs")
    assert "hydra.run.dir=<dir>" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("run_name", [None, "mlp-adam", "run_2026-12-07", 42, "n" * 255])
def test_a_plain_name_is_taken(tmp_path, run_name):
    check_run_name(run_name, tmp_path / "outputs" / "not-yet-made")
