"""`--help` takes the fast path (hydralight.core.helptext) and prints exactly what Hydra's own, slow `--help` prints:
the project's groups and config, in the library's words, naming no task the project does not have."""

import re

import pytest

from hydralight.testing import assert_ok, run_cli

# Hydra's own app help for a config: hydra.main without hydralight's CLI in front of it.
HYDRA_HELP = (
    "import sys, hydra; from hydralight.core.cli import config_dir; "
    "from hydralight.core.resolvers import register_resolvers; register_resolvers(); "
    "hydra.main(config_path=config_dir(), config_name=sys.argv.pop(1), version_base='1.3')(lambda cfg: None)()"
)
# The template's example tasks: a project without them (this one) must not hear of them in its help.
EXAMPLES = ("my_project", "digits", "mnist", "classifier.yaml", "model/net", "cnn", "gpt", "shakespeare")


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("train.py", ["--help"]),
        ("train.py", ["-h", "model.net.hidden=4", "trainer.max_epochs=3", "data.batch_size=32"]),
        ("eval.py", ["--help"]),
    ],
    ids=["train", "train-with-overrides", "eval"],
)
def test_fast_help_prints_what_hydra_prints(project, script, args):
    fast = run_cli(script, *args, cwd=project)
    hydra = run_cli("-c", HYDRA_HELP, script.removesuffix(".py"), *args, cwd=project)
    assert_ok(fast)
    assert_ok(hydra)
    assert fast.stdout == hydra.stdout
    assert "== Configuration groups ==" in fast.stdout
    assert re.search(r"^model: (.*, )?regression(,|$)", fast.stdout, re.MULTILINE), fast.stdout  # the project's own
    assert not [name for name in EXAMPLES if name in fast.stdout.lower()], fast.stdout


def test_the_overrides_reach_the_config_help_shows(project):
    """`-h key=value ...` shows the config those overrides compose."""
    result = run_cli("train.py", "-h", "model.net.hidden=4", "data.batch_size=32", cwd=project)
    assert_ok(result)
    assert re.search(r"^    hidden: 4$", result.stdout, re.MULTILINE) and "  batch_size: 32\n" in result.stdout


def test_help_with_a_bad_override_is_left_to_hydra(project):
    """The fast path only handles `--help [overrides]` that compose; Hydra reports the rest as it always did."""
    result = run_cli("train.py", "--help", "data=nope", cwd=project)
    assert result.returncode != 0
    assert "data/nope" in result.stderr and "regression" in result.stderr
