"""A Hugging Face `transformers` model as its users write one: a tiny random BERT built from its config (nothing
downloaded) that classifies token sequences, for the `hf` extra's tests (lib/tests/test_hf_task.py). Imported only by
them: `import hydralight.testing` never imports transformers.

- `TinyTextClassifier`: dict batches `{input_ids, attention_mask, labels}`, `forward(input_ids, attention_mask)` ->
  logits, a dict `example_input_array` (export keeps both inputs), AdamW without decay on biases and LayerNorms and
  transformers' own per-step linear warm-up schedule, metrics named with underscores (`val_acc`, `test_loss`).
  Under `strategy=fsdp` each encoder layer (an element of BERT's `nn.ModuleList`) is sharded on its own.
- `MarkerData`: does a marker token occur in the unpadded part of a sequence? Every sequence is padded to one length
  with the marker itself, so a model that ignored the attention mask would see a marker everywhere.
- `ShardingRecord`: a callback that writes what FSDP made of each process's parameters, for the tests to read.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import StackDataset
from torchmetrics.classification import MulticlassAccuracy
from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

from hydralight.modules import plain
from hydralight.testing.tasks import SplitsData

CLS, MARKER = 1, 2  # token ids: 0 is unused, 3 and up are the sequences' other tokens

# transformers.BertConfig's arguments for a BERT of ~20k parameters: two encoder layers, no dropout.
TINY_BERT = {
    "vocab_size": 16,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 16,
    "num_labels": 2,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
NO_DECAY = ("bias", "LayerNorm.weight")  # the parameters Hugging Face's recipes exempt from weight decay


class TinyTextClassifier(LightningModule):
    """`BertForSequenceClassification` of `config` (BertConfig's arguments, saved as a plain dict), trained with AdamW
    and a linear warm-up then decay over the run's steps; logs `<stage>_loss` and `<stage>_acc`."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 10,
    ) -> None:
        super().__init__()
        config = plain(config) or dict(TINY_BERT)  # a DictConfig in a checkpoint fails weights-only loading
        self.save_hyperparameters(
            {"config": config, "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps}
        )
        bert = BertConfig(**self.hparams.config)
        self.model = BertForSequenceClassification(bert)
        self.train_acc = MulticlassAccuracy(bert.num_labels)
        self.val_acc = MulticlassAccuracy(bert.num_labels)
        self.test_acc = MulticlassAccuracy(bert.num_labels)
        length = bert.max_position_embeddings
        self.example_input_array = {
            "input_ids": torch.full((1, length), CLS, dtype=torch.long),
            "attention_mask": torch.ones(1, length, dtype=torch.long),
        }

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        outputs = self.model(**batch)  # with `labels`, transformers computes the cross-entropy itself
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(outputs.logits, batch["labels"])
        size = len(batch["labels"])
        self.log(f"{stage}_loss", outputs.loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log(f"{stage}_acc", accuracy, on_step=False, on_epoch=True, batch_size=size)
        return outputs.loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        return {"prediction": logits.argmax(dim=-1), "probability": logits.softmax(dim=-1)[:, 1]}

    def configure_optimizers(self) -> dict[str, Any]:
        decay = [p for name, p in self.named_parameters() if not name.endswith(NO_DECAY)]
        no_decay = [p for name, p in self.named_parameters() if name.endswith(NO_DECAY)]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        scheduler = get_linear_schedule_with_warmup(
            optimizer, self.hparams.warmup_steps, int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def marker_sequences(n_samples: int, length: int, vocab_size: int, min_length: int, generator: torch.Generator) -> dict:
    """`n_samples` sequences of [CLS] and random tokens, each `min_length` to `length - 1` long and padded to `length`
    with the marker; half of them (labels 1) hold one or two markers in their unpadded part."""
    ids = torch.randint(MARKER + 1, vocab_size, (n_samples, length), generator=generator)
    ids[:, 0] = CLS
    lengths = torch.randint(min_length, length, (n_samples,), generator=generator)
    attention_mask = (torch.arange(length) < lengths[:, None]).long()
    labels = torch.randint(2, (n_samples,), generator=generator)
    for row in labels.nonzero().flatten().tolist():
        count = int(torch.randint(1, 3, (), generator=generator))
        positions = 1 + torch.randperm(int(lengths[row]) - 1, generator=generator)[:count]
        ids[row, positions] = MARKER
    ids[attention_mask == 0] = MARKER  # a model that ignores the mask sees a marker in every sequence
    return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}


class MarkerData(SplitsData):
    """Dict batches {input_ids, attention_mask, labels} of `marker_sequences`, from their own seeded generator (the
    same data in every process): `n_train` to train on, `n_eval` each to validate and test on."""

    def __init__(
        self,
        n_train: int = 512,
        n_eval: int = 128,
        length: int = 16,
        vocab_size: int = 16,
        min_length: int = 3,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        columns = marker_sequences(n_train + 2 * n_eval, length, vocab_size, min_length, generator)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_eval), "test": (n_train + n_eval, None)}
        self.splits = {
            stage: StackDataset(**{name: column[start:stop] for name, column in columns.items()})
            for stage, (start, stop) in bounds.items()
        }
        self.batch_size = batch_size


class ShardingRecord(Callback):
    """At the start of training, writes `<folder>/rank<N>.json`: for each module FSDP wrapped (its path, its own class
    without FSDP's), whether all its parameters are DTensors sharded on dim 0, their local and full element counts."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor, Shard

        record = {}
        for path, module in pl_module.named_modules():
            if isinstance(module, FSDPModule):
                parameters = list(module.parameters())
                record[path] = {
                    "class": next(base.__name__ for base in type(module).__bases__ if base is not FSDPModule),
                    "sharded": all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in parameters),
                    "local": sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in parameters),
                    "full": sum(p.numel() for p in parameters),
                }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1))
