"""`--help` takes the fast path (hydralight.core.helptext) and prints exactly what Hydra's own, slow `--help` prints."""

import pytest

from tests.conftest import assert_ok, run_cli

# Hydra's own app help for a config: hydra.main without hydralight's CLI in front of it.
HYDRA_HELP = (
    "import sys, hydra; from hydralight.core.cli import config_dir; "
    "from hydralight.core.resolvers import register_resolvers; register_resolvers(); "
    "hydra.main(config_path=config_dir(), config_name=sys.argv.pop(1), version_base='1.3')(lambda cfg: None)()"
)


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("train.py", ["--help"]),
        ("train.py", ["-h", "model/net=cnn", "trainer.max_epochs=3", "data.batch_size=32"]),
        ("eval.py", ["--help"]),
    ],
    ids=["train", "train-with-overrides", "eval"],
)
def test_fast_help_prints_what_hydra_prints(script, args):
    fast = run_cli(script, *args)
    hydra = run_cli("-c", HYDRA_HELP, script.removesuffix(".py"), *args)
    assert_ok(fast)
    assert_ok(hydra)
    assert fast.stdout == hydra.stdout
    assert "== Configuration groups ==" in fast.stdout and "model/net: cnn, mlp" in fast.stdout


def test_help_with_a_bad_override_is_left_to_hydra():
    """The fast path only handles `--help [overrides]` that compose; Hydra reports the rest as it always did."""
    result = run_cli("train.py", "--help", "data=nope")
    assert result.returncode != 0
    assert "data/nope" in result.stderr and "digits" in result.stderr
