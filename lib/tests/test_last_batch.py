"""A last training batch of one sample is dropped by the library's data modules: under BatchNorm it would end the
first epoch with "Expected more than 1 value per channel when training", at every resume too (issue 26, item 6).
Any other last batch, and every sample of val and test, is kept."""

import json
from pathlib import Path

import pytest
from torch import nn

from hydralight.core.train import train
from hydralight.testing.images import ImageClassifier

TRAIN_SIZE = 105  # data=images as configured: 150 images, 10 % val, 20 % test


class BatchNormClassifier(ImageClassifier):
    """The testing image classifier with a BatchNorm after its hidden layer: a batch of one fails in training mode."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def batches_of(make_cfg, batch_size: int) -> dict[str, int]:
    from hydralight.core.build import build_datamodule

    datamodule = build_datamodule(make_cfg("data=images", f"data.batch_size={batch_size}").data)
    datamodule.setup("fit")
    datamodule.trainer = None
    return {
        "train": [len(batch[0]) for batch in datamodule.train_dataloader()],
        "val": sum(len(batch[0]) for batch in datamodule.val_dataloader()),
    }


@pytest.mark.parametrize(("batch_size", "kept"), [(8, TRAIN_SIZE - 1), (7, TRAIN_SIZE), (10, TRAIN_SIZE)])
def test_only_a_last_training_batch_of_one_is_dropped(make_cfg, batch_size, kept):
    """105 training samples: at batch 8 the lone last sample goes (13 batches of 8); at 7 or 10 every sample stays;
    validation keeps every sample either way."""
    batches = batches_of(make_cfg, batch_size)
    assert sum(batches["train"]) == kept and min(batches["train"]) > 1
    assert batches["val"] == 15


def test_batchnorm_trains_through_a_split_that_leaves_one_sample_over(make_cfg):
    """A BatchNorm model at a batch size leaving one training sample over trains and tests, exit 0."""
    target = f"{BatchNormClassifier.__module__}.{BatchNormClassifier.__name__}"
    cfg = make_cfg("data=images", "model=image_classifier", f"model._target_={target}", "data.batch_size=8",
                   "monitor=val/acc", "mode=max")  # fmt: skip
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert "test/acc" in json.dumps(metrics)


def test_a_batch_of_one_from_a_users_own_loader_is_one_line(make_cfg, monkeypatch):
    """A data module of the user's own that hands BatchNorm a batch of one: a UserError naming data.batch_size and
    the two ways out, not torch's traceback."""
    from hydralight.core.errors import UserError
    from hydralight.data import base

    monkeypatch.setattr(base.StatefulDataLoader, "__init__", keep_last_batch(base.StatefulDataLoader.__init__))
    target = f"{BatchNormClassifier.__module__}.{BatchNormClassifier.__name__}"
    cfg = make_cfg("data=images", "model=image_classifier", f"model._target_={target}", "data.batch_size=8",
                   "monitor=val/acc", "mode=max")  # fmt: skip
    with pytest.raises(UserError, match=r"batch of one sample reached BatchNorm \(data.batch_size=8"):
        train(cfg)


def keep_last_batch(init):
    """A StatefulDataLoader.__init__ that keeps every last batch, as a loader of the user's own would."""

    def init_keeping(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "drop_last": False})

    return init_keeping
