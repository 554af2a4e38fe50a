"""`python predict.py ckpt_path=<GPT checkpoint> prompt="ROMEO:" max_new_tokens=200`: the prompt and its continuation
written to a text file and printed, reproducible with `seed=`; the sampling options checked, each named; `prompt=` on
a module with no `predict_from_prompt` hook (the digits classifier) refused in one line."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule

from hydralight.core.errors import UserError
from hydralight.core.predict import PROMPT_HOOK, predict, prompt_hook
from hydralight.core.train import train
from tests.conftest import TINY, assert_ok, compose_config, run_cli

# A GPT too small to learn much, trained for 4 steps on the embedded text: the real recipe, shrunk.
TINY_GPT = (
    *TINY,
    "experiment=shakespeare_gpt",
    "test=false",
    "data.block_size=16",
    "data.batch_size=8",
    "data.samples_per_epoch=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
)
PROMPT = "ROMEO:"


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def gpt_checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    train(compose_config("train", run_dir, TINY_GPT))
    return last_checkpoint(run_dir)


@pytest.fixture(scope="module")
def vocab(gpt_checkpoint) -> str:
    return torch.load(gpt_checkpoint, weights_only=True)["hyper_parameters"]["vocab"]


@pytest.fixture
def generate(make_cfg, gpt_checkpoint, tmp_path):
    """generate(*overrides) -> the text predict.py wrote for the tiny GPT, in a file of its own."""
    files = iter(range(1000))

    def run(*overrides: str) -> str:
        output = tmp_path / f"generated-{next(files)}.txt"
        cfg = make_cfg(f"ckpt_path={gpt_checkpoint}", f"output={output}", *overrides, config_name="predict", tiny=False)
        predict(cfg, overrides=[])
        return output.read_text(encoding="utf-8")

    return run


def test_a_prompt_is_continued_by_max_new_tokens_characters_of_the_vocab(make_cfg, gpt_checkpoint, vocab, capsys):
    """With no output=, the text goes to <run dir>/generated.txt, byte for byte what it prints."""
    cfg = make_cfg(f"ckpt_path={gpt_checkpoint}", f"prompt={PROMPT}", "max_new_tokens=50", config_name="predict",
                   tiny=False)  # fmt: skip
    assert predict(cfg, overrides=[]) == {"characters": len(PROMPT) + 50}
    path = Path(cfg.paths.output_dir) / "generated.txt"
    assert cfg.output == str(path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(PROMPT) and len(text) == len(PROMPT) + 50
    assert set(text) <= set(vocab)
    assert capsys.readouterr().out == text + "\n"


def test_the_same_seed_writes_the_same_text_and_another_seed_another(generate):
    first = generate(f"prompt={PROMPT}", "max_new_tokens=30", "seed=1")
    assert generate(f"prompt={PROMPT}", "max_new_tokens=30", "seed=1") == first
    assert generate(f"prompt={PROMPT}", "max_new_tokens=30", "seed=2") != first


def test_sampling_options_reach_the_module(generate):
    """top_k=1 and temperature=0 both take the most likely character (whatever the seed); the default samples."""
    greedy = generate(f"prompt={PROMPT}", "max_new_tokens=20", "temperature=0", "seed=1")
    assert generate(f"prompt={PROMPT}", "max_new_tokens=20", "top_k=1", "seed=2") == greedy
    assert generate(f"prompt={PROMPT}", "max_new_tokens=20", "seed=1") != greedy


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ("temperature=-1", r"^temperature=-1 must be a number >= 0"),
        ("temperature=hot", r"^temperature='hot' must be a number >= 0"),
        ("temperature=inf", r"^temperature=inf must be a number >= 0"),
        ("top_k=0", r"^top_k=0 must be a whole number >= 1, or null"),
        ("top_k=2.5", r"^top_k=2.5 must be a whole number >= 1"),
        ("max_new_tokens=-5", r"^max_new_tokens=-5 must be a whole number >= 0"),
        ("seed=abc", r"^seed='abc' is not valid"),
        ("prompt=123", r"^prompt=123 is not text: Hydra read it as int"),
        ("prompt=ROMEO_1", r"^prompt='ROMEO_1' has characters the model does not know: '1_'"),
    ],
)
def test_a_bad_option_is_a_user_error_naming_it(make_cfg, gpt_checkpoint, tmp_path, option, match):
    output = tmp_path / "generated.txt"
    cfg = make_cfg(f"ckpt_path={gpt_checkpoint}", f"prompt={PROMPT}", option, f"output={output}",
                   config_name="predict", tiny=False)  # fmt: skip
    with pytest.raises(UserError, match=match) as error:
        predict(cfg, overrides=[])
    assert "\n" not in str(error.value)
    assert not output.exists()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (("max_new_tokens=5",), r"^max_new_tokens=5 is an option of prompt=<text>, and no prompt is given"),
        ((f"prompt={PROMPT}", "input=rows.csv"), r"^prompt='ROMEO:' and input='rows.csv' are two inputs"),
    ],
)
def test_prompt_options_need_a_prompt_and_no_input(make_cfg, gpt_checkpoint, overrides, match):
    cfg = make_cfg(f"ckpt_path={gpt_checkpoint}", *overrides, config_name="predict", tiny=False)
    with pytest.raises(UserError, match=match):
        predict(cfg, overrides=[])


def test_a_prompt_for_the_digits_classifier_is_one_line_saying_what_it_takes(make_cfg, tmp_path):
    train(compose_config("train", tmp_path / "digits", (*TINY, "test=false")))
    cfg = make_cfg(f"ckpt_path={last_checkpoint(tmp_path / 'digits')}", f"prompt={PROMPT}", config_name="predict",
                   tiny=False)  # fmt: skip
    with pytest.raises(UserError, match=rf"^prompt='ROMEO:': Classifier has no {PROMPT_HOOK}\(prompt, \.\.\.\) method"):
        predict(cfg, overrides=[])


class Echo(LightningModule):
    def predict_from_prompt(self, prompt: str, repeat: int = 1) -> str:
        return prompt * repeat


def test_an_option_the_hook_does_not_take_is_named_with_those_it_does():
    assert prompt_hook(Echo(), "ab", {"repeat": 2})("ab", repeat=2) == "abab"
    with pytest.raises(UserError, match=r"^top_k=3: Echo.predict_from_prompt takes no top_k. It accepts: repeat\.$"):
        prompt_hook(Echo(), "ab", {"top_k": 3})


@pytest.mark.slow
def test_the_command_line_writes_what_predict_writes_in_process(gpt_checkpoint, generate, tmp_path):
    """`predict.py ckpt_path=<ckpt> prompt="ROMEO:" max_new_tokens=...` as a process: exit 0, the text printed
    and in <run dir>/generated.txt, equal to the in-process text of the same seed."""
    run_dir = tmp_path / "predict-run"
    result = run_cli(
        "predict.py", f"ckpt_path={gpt_checkpoint}", f"prompt={PROMPT}", "max_new_tokens=60", f"hydra.run.dir={run_dir}"
    )
    assert_ok(result)
    text = (run_dir / "generated.txt").read_text(encoding="utf-8")
    assert text == generate(f"prompt={PROMPT}", "max_new_tokens=60")
    assert text in result.stdout and "Traceback" not in result.stderr
