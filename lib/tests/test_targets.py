"""Every mistyped value stops the run before training with one line that names its config key: each `_target_`'s
arguments are checked against its signature before anything is built, and a constructor's own complaint is reported
under the key of the node that made it."""

import pytest

from hydralight.core.build import build_datamodule
from hydralight.core.errors import UserError
from hydralight.core.train import train
from hydralight.core.validation import validate, validate_targets

CONFIGURED = "model=configured_regression"  # a module whose net and optimizer are configs (`_recursive_: false`)
IMAGES = ("model=image_classifier", "data=images")  # a data module passing `**kwargs` to InMemoryDataModule


def test_unknown_argument_on_the_command_line_names_key_target_and_the_closest_one(make_cfg):
    """`+model.optimizer.weight_decy=0.1` (under the model's `_recursive_: false`) is refused before anything is
    built, suggesting weight_decay and listing the valid arguments."""
    cfg = make_cfg(CONFIGURED, "+model.optimizer.weight_decy=0.1")
    with pytest.raises(UserError) as caught:
        validate_targets(cfg)
    message = str(caught.value)
    assert message.startswith("model.optimizer.weight_decy=0.1 is not an argument of torch.optim.Adam")
    assert "did you mean weight_decay?" in message
    assert "Valid: params, lr, betas" in message


def test_unknown_argument_in_a_users_yaml_file_is_named_by_its_key(make_cfg, tmp_path):
    """A typo in an experiment file the user wrote (found through hydra.searchpath) is the same one line."""
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nmodel:\n  optimizer:\n    weight_decy: 0.1\n"
    )
    cfg = make_cfg(CONFIGURED, f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "experiment=typo")
    with pytest.raises(UserError, match=r"^model\.optimizer\.weight_decy=0\.1 .*did you mean weight_decay\?"):
        validate_targets(cfg)


def test_keywords_a_class_passes_to_its_base_are_checked_against_the_base(make_cfg):
    """ImageData takes `**kwargs` for InMemoryDataModule: a typo there is caught with the base's names."""
    with pytest.raises(UserError, match=r"^data\.batch_sise=32 is not an argument .*did you mean batch_size\?"):
        validate_targets(make_cfg(*IMAGES, "+data.batch_sise=32"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param(
            "model.optimizer.lr=abc",
            r"^model\.optimizer\.lr='abc' is not valid: torch\.optim\.Adam takes a number here \(default 0\.001\)$",
            id="lr=abc",
        ),
        pytest.param(
            "model.optimizer.lr=-1",
            r"^model\.optimizer\.lr=-1 is not valid: Invalid learning rate: -1 \(torch\.optim\.Adam\)$",
            id="lr=-1",
        ),
        pytest.param(
            "model.optimizer.betas=[1.5,0.9]",
            r"^model\.optimizer\.betas=\[1\.5, 0\.9\] is not valid: Invalid beta parameter",
            id="betas",
        ),
    ],
)
def test_optimizer_values_are_tried_before_training(make_cfg, override, expected):
    """The optimizer is built only inside fit; its values are tried on a dummy parameter first, named by key."""
    with pytest.raises(UserError, match=expected):
        validate_targets(make_cfg(CONFIGURED, override))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            [CONFIGURED, "model.net.dropout=2"],
            r"^model\.net\.dropout=2 is not valid: dropout probability has to be between 0 and 1, but got 2 "
            r"\(hydralight\.testing\.configured\.DropoutNet\)$",
            id="dropout=2",
        ),
        pytest.param(
            [*IMAGES, "data.num_folds=1"],
            r"^data\.num_folds=1 is not valid: num_folds must be a whole number >= 2 .*"
            r"\(hydralight\.testing\.images\.ImageData\)$",
            id="num_folds=1",
        ),
        pytest.param(
            [*IMAGES, "data.fold=-1", "data.num_folds=3"],
            r"^data\.num_folds=3, data\.fold=-1 are not valid together: fold must be one of 0\.\.2",
            id="fold-of-folds",
        ),
        pytest.param(
            ["trainer.devices=-1"],  # QUICK sets trainer.accelerator=cpu
            r"^trainer\.devices=-1 means all GPUs, and this run has none\. .*from 1 \(the default\) to \d+",
            id="devices=-1-on-cpu",
        ),
    ],
)
def test_values_a_constructor_refuses_are_named_by_their_key(make_cfg, overrides, expected):
    """The train task stops before fit when a constructor refuses a value: the key of the node that raised (the
    net, built inside the model), the value, and the constructor's own words."""
    with pytest.raises(UserError, match=expected):
        train(make_cfg(*overrides))


def test_folds_are_checked_by_the_data_module_itself(make_cfg):
    """Built outside train (eval and predict build the data module too), the value is still named by its key."""
    with pytest.raises(UserError, match=r"^data\.num_folds=1 is not valid"):
        build_datamodule(make_cfg(*IMAGES, "data.num_folds=1").data)


@pytest.mark.parametrize("max_epochs", [0, -5])
def test_max_epochs_below_one_is_refused(make_cfg, max_epochs):
    """`trainer.max_epochs=0` would skip training and test random weights: refused like -5, before torch."""
    with pytest.raises(UserError, match=rf"^trainer\.max_epochs={max_epochs} is not valid\. .*>= 1"):
        validate(make_cfg(f"trainer.max_epochs={max_epochs}"), ckpt_required=False)


def test_resuming_past_max_epochs_says_the_checkpoints_epoch_and_what_to_set(make_cfg, tmp_path):
    """A run dir whose checkpoint is at epoch 2, continued with trainer.max_epochs=1: one line with the epoch and
    the value that trains further (Lightning's own MisconfigurationException came from inside fit)."""
    quick = ("logger=none", "test=false", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
             "+trainer.num_sanity_val_steps=0", "~callbacks.model_checkpoint")  # fmt: skip
    train(make_cfg("trainer.max_epochs=3", *quick))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError) as caught:
        train(make_cfg("trainer.max_epochs=1", *quick))
    message = str(caught.value)
    assert message.startswith("trainer.max_epochs=1 is below the epoch of the checkpoint this run continues")
    assert f"{last} is at epoch 2 (3 epochs trained)" in message
    assert "set trainer.max_epochs=4 or more" in message


def test_a_data_module_without_loader_keys_passes_the_data_checks():
    """The harness requires no data key: a task's data config may hold only `_target_` and its own arguments."""
    from omegaconf import OmegaConf

    from hydralight.core.validation import validate_data

    validate_data(OmegaConf.create({"data": {"_target_": "lightning.pytorch.demos.boring_classes.BoringDataModule"}}))
    with pytest.raises(UserError, match=r"data.batch_size=0 is not valid"):
        validate_data(OmegaConf.create({"data": {"batch_size": 0}}))
