"""The text task: the character GPT (causal, trainable, weight decay on matrices, warm-up + cosine, seeded sampling,
weights-only checkpoints) and the Tiny Shakespeare data module (windows, a split with no shared text, DDP shards)."""

import gzip
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from hydralight.core.errors import UserError
from hydralight.schedules import WarmupCosineLR
from my_project.data.shakespeare import SHAKESPEARE_FILE, RandomWindowSampler, ShakespeareDataModule, read_text
from my_project.models.gpt import GPT
from tests.conftest import compose_config, prepare_dataset

VOCAB = "\n abcdefghijklmnopqrstuvwxyz"
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2, "weight_decay": 0.1}
TINY_NET = {"n_layer": 2, "n_head": 2, "n_embd": 16}


def tiny_gpt(optimizer: dict = ADAMW, scheduler: dict | None = None, block_size: int = 8, **kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab=VOCAB, optimizer=optimizer, scheduler=scheduler, block_size=block_size, **{**TINY_NET, **kwargs})


def optimizer_of(model: GPT, stepping_batches: int = 40) -> torch.optim.Optimizer:
    model.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": stepping_batches})()
    configured = model.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


def text_file(tmp_path: Path, n: int = 4000) -> Path:
    """A small text of VOCAB's characters (every one of them appears), as a gzip file like the embedded one."""
    generator = torch.Generator().manual_seed(0)
    body = "".join(VOCAB[i] for i in torch.randint(len(VOCAB), (n - len(VOCAB),), generator=generator))
    path = tmp_path / "text.txt.gz"
    path.write_bytes(gzip.compress((VOCAB + body).encode()))
    return path


# The model.


def test_changing_a_later_character_leaves_earlier_logits_unchanged():
    """Causal: position t's prediction depends only on positions <= t."""
    model = tiny_gpt().eval()
    ids = torch.randint(len(VOCAB), (2, 8), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % len(VOCAB)
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert before.shape == (2, 8, len(VOCAB))
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_weight_decay_applies_to_linear_and_embedding_weights_only():
    """AdamW's decay pulls every weight matrix towards 0, but no bias and no LayerNorm parameter."""
    model = tiny_gpt()
    optimizer = optimizer_of(model)
    matrices = {id(module.weight) for module in model.modules() if isinstance(module, nn.Linear | nn.Embedding)}
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    undecayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] == 0 for p in group["params"]}
    assert decayed == matrices
    assert undecayed == {id(p) for p in model.parameters()} - matrices
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.1, 0.0}


def test_warmup_then_cosine_learning_rates():
    """Linear up to the lr over warmup_steps, then a cosine down to min_lr_ratio x lr at total_steps."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = WarmupCosineLR(optimizer, total_steps=25, warmup_steps=5, min_lr_ratio=0.1)
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0])
    assert lrs[5] == pytest.approx(2.0)
    assert lrs[15] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert all(a > b for a, b in itertools.pairwise(lrs[5:26]))
    assert lrs[25:] == pytest.approx([0.2] * 5)

    resumed = WarmupCosineLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0), total_steps=25, warmup_steps=5)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.get_last_lr() == scheduler.get_last_lr()


def test_gpt_config_steps_the_schedule_per_optimizer_step_over_the_whole_run(tmp_path):
    """conf/model/gpt.yaml: warm-up + cosine over trainer.estimated_stepping_batches, stepped every step."""
    cfg = compose_config("train", tmp_path / "run", ["experiment=shakespeare_gpt"])
    model = instantiate(cfg.model)
    model.trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 321})()
    configured = model.configure_optimizers()
    assert configured["lr_scheduler"]["interval"] == "step"
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps == 321
    assert model.hparams.vocab == cfg.data.vocab and model.hparams.block_size == cfg.data.block_size
    assert (cfg.monitor, cfg.mode) == ("val/loss", "min")


def test_generation_is_reproducible_with_a_seed():
    model = tiny_gpt()
    first = model.generate_text("the ", 40, seed=3)
    assert first.startswith("the ") and len(first) == 44
    assert model.generate_text("the ", 40, seed=3) == first
    assert model.generate_text("the ", 40, seed=4) != first
    assert model.training, "generate must give the module back in the mode it found it"


def test_greedy_and_top_k_one_ignore_the_seed_and_agree():
    model = tiny_gpt()
    greedy = model.generate_text("ab", 20, temperature=0, seed=1)
    assert model.generate_text("ab", 20, temperature=0, seed=2) == greedy
    assert model.generate_text("ab", 20, top_k=1, seed=5) == greedy


def test_top_k_samples_only_among_the_k_most_likely_and_temperature_flattens():
    """With fixed logits ranking the characters: top_k=3 draws only the 3 first; temperature 100 draws almost
    uniformly, temperature 0.1 almost always the first."""
    model = tiny_gpt()
    ranked = torch.linspace(10.0, 0.0, len(VOCAB))
    model.forward = lambda ids: ranked.expand(*ids.shape, len(VOCAB))
    prompt = torch.tensor([1])
    generator = torch.Generator().manual_seed(0)
    top3 = model.generate(prompt, 300, top_k=3, generator=generator)[1:]
    assert set(top3.tolist()) == {0, 1, 2}
    hot = model.generate(prompt, 300, temperature=100.0, generator=generator)[1:]
    cold = model.generate(prompt, 300, temperature=0.1, generator=generator)[1:]
    assert len(set(hot.tolist())) > len(VOCAB) - 3
    assert (cold == 0).float().mean() > 0.9


def test_generation_crops_a_long_context_to_block_size():
    model = tiny_gpt(block_size=8)
    text = model.generate_text("abcdefghijklmnop", 5, seed=0)  # a prompt twice the block size
    assert text.startswith("abcdefghijklmnop") and len(text) == 21


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": "ABC"}, r"prompt='ABC' has characters the model does not know: 'ABC'"),
        ({"prompt": ""}, r"prompt='' is empty"),
        ({"temperature": -1.0}, r"temperature=-1.0 must be a number >= 0"),
        ({"temperature": float("nan")}, r"temperature=nan must be a number >= 0"),
        ({"top_k": 0}, r"top_k=0 must be a whole number >= 1"),
        ({"top_k": True}, r"top_k=True must be a whole number >= 1"),
        ({"max_new_tokens": 2.0}, r"max_new_tokens=2.0 must be a whole number >= 0"),
    ],
)
def test_bad_generation_settings_are_user_errors(kwargs, match):
    settings = {"prompt": "ab", "max_new_tokens": 3, **kwargs}
    with pytest.raises(UserError, match=match):
        tiny_gpt().generate_text(**settings)


def test_predict_from_prompt_samples_with_the_checkpoints_settings_unless_given():
    """predict.py's hook: an option it is not given is the module's hyperparameter."""
    model = tiny_gpt(max_new_tokens=6, temperature=0)
    assert model.predict_from_prompt("ab") == model.generate_text("ab", 6, temperature=0)
    assert len(model.predict_from_prompt("ab", max_new_tokens=3)) == 5
    torch.manual_seed(0)
    sampled = model.predict_from_prompt("ab", temperature=1.0)
    torch.manual_seed(0)
    assert model.predict_from_prompt("ab", temperature=1.0) == sampled  # from torch's RNG, which predict.py seeds


def test_predict_step_continues_each_prompt():
    model = tiny_gpt(max_new_tokens=6, temperature=0)
    prompts = torch.stack([model.encode("ab c"), model.encode("xyz ")])
    rows = model.predict_step(prompts, 0)
    assert rows["prompt"] == ["ab c", "xyz "]
    assert [text[:4] for text in rows["text"]] == rows["prompt"] and {len(t) for t in rows["text"]} == {10}


# The data.


def test_embedded_text_is_tiny_shakespeare_and_its_vocab_is_the_configs(tmp_path):
    """The config's vocab is the embedded text's character set, so `model.vocab: ${data.vocab}` is right."""
    text = read_text()
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    cfg = compose_config("train", tmp_path / "run", ["data=shakespeare"])
    assert cfg.data.vocab == "".join(sorted(set(text)))
    assert (
        (Path(__file__).parents[1] / "src/my_project/data/SHAKESPEARE_LICENSE.md").read_text().count(SHAKESPEARE_FILE)
    )


def decode(ids: torch.Tensor) -> str:
    return "".join(VOCAB[i] for i in ids.tolist())


def test_windows_are_inputs_and_targets_shifted_by_one_and_splits_share_no_text(tmp_path):
    """Train, val and test are consecutive parts of the text; each split's windows lie inside its own part."""
    path = text_file(tmp_path, n=4000)
    datamodule = ShakespeareDataModule(block_size=16, val_fraction=0.1, test_fraction=0.1, text_path=str(path))
    datamodule.setup("fit")
    splits = datamodule.splits
    parts = {name: decode(splits[name].ids) for name in ("train", "val", "test")}
    assert parts["train"] + parts["val"] + parts["test"] == gzip.decompress(path.read_bytes()).decode()
    assert [len(part) for part in parts.values()] == [3200, 400, 400]
    for name, stride in (("train", 1), ("val", 16), ("test", 16)):
        windows = splits[name]
        assert len(windows) == (len(parts[name]) - 17) // stride + 1  # every window that fits, none past the end
        for index in (0, len(windows) // 2, len(windows) - 1):
            x, y = windows[index]
            assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (16,)
            start = index * stride
            assert decode(x) == parts[name][start : start + 16]
            assert decode(y) == parts[name][start + 1 : start + 17]
    batch_x, batch_y = next(iter(datamodule.val_dataloader()))
    assert batch_x.shape == (24, 16) and torch.equal(batch_x[:, 1:], batch_y[:, :-1])


def test_training_draws_samples_per_epoch_new_windows_each_epoch_and_shards_them(tmp_path):
    datamodule = ShakespeareDataModule(
        block_size=16, batch_size=8, samples_per_epoch=96, text_path=str(text_file(tmp_path))
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert len(loader) == 12
    sampler = loader.sampler
    assert isinstance(sampler, RandomWindowSampler)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # the same epoch, e.g. after a resume: the same windows
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    shards = [list(RandomWindowSampler(datamodule.splits["train"], 96, 2, rank, sampler.seed)) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(epoch0)  # two processes share one process's draw
    assert len(shards[0]) == len(shards[1]) == 48


def test_a_vocab_that_is_not_the_texts_is_a_user_error(tmp_path):
    datamodule = ShakespeareDataModule(vocab="abc", text_path=str(text_file(tmp_path)))
    with pytest.raises(UserError, match=r'data.vocab="abc" is not the character set of .*: vocab: "\\n abc'):
        datamodule.setup("fit")


def test_val_loss_is_the_mean_over_every_character_and_ppl_its_exp(tmp_path):
    """val/loss weighs each batch by its characters (the last one is short), so it is the per-character mean."""
    datamodule = ShakespeareDataModule(
        block_size=8, batch_size=16, val_fraction=0.1, text_path=str(text_file(tmp_path))
    )
    datamodule.setup("fit")
    assert len(datamodule.splits["val"]) % 16 != 0
    model = tiny_gpt()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    x, y = datamodule.splits["val"].__getitems__(list(range(len(datamodule.splits["val"]))))
    with torch.no_grad():
        expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_checkpoint_loads_weights_only_and_generates_the_same_text(tmp_path):
    """A trained checkpoint: plain containers (torch.load weights_only), and the module it rebuilds writes the same."""
    overrides = [
        "experiment=shakespeare_gpt",
        f"data.text_path={text_file(tmp_path)}",
        "data.block_size=16",
        "data.samples_per_epoch=64",
        "model.n_layer=1",
        "model.n_embd=16",
        "model.n_head=2",
    ]
    cfg = compose_config("train", tmp_path / "run", overrides)
    cfg.data.vocab = VOCAB  # a newline cannot be typed in an override: a config file holds it
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="last")
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=2, logger=False, callbacks=[checkpoint],
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    path = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(path, weights_only=True)["hyper_parameters"]["vocab"] == VOCAB
    loaded = GPT.load_from_checkpoint(path, weights_only=True)
    assert loaded.generate_text("the ", 30, seed=0) == model.generate_text("the ", 30, seed=0)
    assert loaded.example_input_array.shape == (1, 16)


def test_a_text_becomes_windows_that_hold_each_next_character_once(tmp_path):
    """source=text: consecutive windows of block_size + 1 character ids that overlap by one, over the whole text."""
    import json

    load_from_disk = pytest.importorskip("datasets", reason="the ondisk extra").load_from_disk
    (tmp_path / "texts").mkdir()
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(200))
    (tmp_path / "texts" / "a.txt").write_text(text)
    out = prepare_dataset(tmp_path / "prepared", "source=text", f"source.path={tmp_path / 'texts'}",
                          "source.block_size=16")  # fmt: skip
    description = json.loads((out / "prepared.json").read_text())
    vocab = description["vocab"]
    assert vocab == "".join(sorted(set(text))) and description["block_size"] == 16
    train = load_from_disk(str(out))["train"].with_format("numpy")[:]["ids"]
    assert train.shape[1] == 17
    decoded = "".join(vocab[i] for i in train[0]) + "".join("".join(vocab[i] for i in row[1:]) for row in train[1:])
    assert text.startswith(decoded) and len(decoded) > 0.85 * len(text)  # consecutive windows overlap by one
