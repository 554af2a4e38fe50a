"""A character-level GPT LightningModule: next-character cross-entropy, AdamW with decay on matrices only, sampling."""

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from hydralight.core.errors import UserError
from hydralight.modules import (
    STAGES,
    EpochMetrics,
    WeightedMean,
    apply_tensor_parallel,
    build,
    plain,
    with_scheduler,
)
from my_project.models.transformer import Transformer


class GPT(EpochMetrics, LightningModule):
    """A causal transformer over the characters of `vocab`, with the mean loss per character (nats) and perplexity.

    `vocab` (the sorted characters, conf/model/gpt.yaml reads it from the data config) is a hyperparameter, so a
    checkpoint alone rebuilds the model, encodes a prompt and decodes what it generates:
    `GPT.load_from_checkpoint(path, weights_only=True).generate_text("ROMEO:", 200)`, or from the command line
    `python predict.py ckpt_path=<file> prompt="ROMEO:"` (through `predict_from_prompt`). `optimizer` and `scheduler`
    are configs (conf/model/optimizer, conf/model/scheduler), built in `configure_optimizers`. `max_new_tokens`,
    `temperature` and `top_k` are the defaults `predict_from_prompt` and `predict_step` sample with.
    """

    def __init__(
        self,
        vocab: str,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        if not vocab or len(set(vocab)) != len(vocab):
            raise UserError(f"model.vocab={vocab!r} must be a non-empty string of distinct characters (data.vocab).")
        self.save_hyperparameters(
            {
                "vocab": str(vocab),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler) or None,  # an empty scheduler config means a constant LR
                "block_size": block_size,
                "n_layer": n_layer,
                "n_head": n_head,
                "n_embd": n_embd,
                "dropout": dropout,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_k": top_k,
            }
        )
        self.net = Transformer(len(vocab), block_size, n_layer, n_head, n_embd, dropout)
        self._index = {char: i for i, char in enumerate(vocab)}
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_" suffix.
        self.mean_loss = nn.ModuleDict({f"{s}_": WeightedMean() for s in STAGES})
        self._logged_stages: set[str] = set()  # stages whose metric objects are logged in the current epoch

    @property
    def example_input_array(self) -> Tensor:
        """A (1, block_size) sequence of token ids: what export traces and the model summary reports."""
        return torch.zeros(1, self.hparams.block_size, dtype=torch.long)

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(ids)

    # Text <-> ids, with the vocabulary kept in the checkpoint.
    def encode(self, text: str) -> Tensor:
        """`text` as a (len,) long tensor of ids; a character outside the vocabulary is a UserError (prompts)."""
        unknown = sorted({char for char in text if char not in self._index})
        if unknown:
            raise UserError(
                f"prompt={text!r} has characters the model does not know: {''.join(unknown)!r}. "
                f"Its vocabulary: {self.hparams.vocab!r}."
            )
        return torch.tensor([self._index[char] for char in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        vocab = self.hparams.vocab
        return "".join(vocab[i] for i in ids.tolist())

    # Training.
    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # mean over every predicted character
        # As in Classifier: update the metric object, log it once per epoch (Lightning computes it, synced across
        # DDP ranks, at epoch end); weighted by characters, so a short last batch counts for what it holds.
        mean_loss = self.mean_loss[f"{stage}_"]
        mean_loss.update(loss.detach(), weight=y.numel())
        if stage not in self._logged_stages:
            self._logged_stages.add(stage)
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if self._loggers_write_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_perplexity(self, stage: str) -> None:
        # compute() already sums over DDP ranks; sync_dist averages the equal values (and tells Lightning so).
        self.log(f"{stage}/ppl", self.mean_loss[f"{stage}_"].compute().exp(), prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")

    def on_test_epoch_end(self) -> None:
        self._log_perplexity("test")

    def configure_model(self) -> None:
        """strategy=model_parallel: the transformer's Megatron-style plan (see transformer.py)."""
        apply_tensor_parallel(self, self.net)

    def configure_optimizers(self) -> Any:
        factory = build(self.hparams.optimizer)
        # Weight decay on the matrices only (Linear and Embedding weights): decaying biases and LayerNorm gains
        # towards 0 only fights their job. The first group takes the optimizer config's weight_decay.
        matrices = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        others = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        return with_scheduler(self, factory([{"params": matrices}, {"params": others, "weight_decay": 0.0}]))

    # Sampling.
    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The prompt ids ((T,) or (B, T)) followed by `max_new_tokens` sampled ids, each from the last block_size.

        temperature 0 picks the most likely character; top_k keeps only the k most likely. Sampling draws from
        `generator` (same seed, same text), else from torch's global RNG (seeded by `seed=`). Runs in eval mode.
        """
        check_sampling(max_new_tokens, temperature, top_k)
        if prompt_ids.shape[-1] == 0:
            raise UserError("prompt='' is empty: give the model at least one character to continue.")
        single = prompt_ids.ndim == 1
        ids = (prompt_ids[None] if single else prompt_ids).to(self.device, torch.long)
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                logits = self(ids[:, -self.hparams.block_size :])[:, -1, :].float()
                if temperature == 0:
                    next_ids = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.shape[-1]:
                        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    next_ids = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
                ids = torch.cat([ids, next_ids], dim=1)
        finally:
            self.train(was_training)
        return ids[0] if single else ids

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """The prompt and its continuation; with `seed`, the same text every time."""
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        return self.decode(self.generate(self.encode(prompt), max_new_tokens, temperature, top_k, generator))

    def predict_from_prompt(
        self,
        prompt: str,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> str:
        """predict.py's `prompt=` hook: the prompt and its continuation, drawn from torch's RNG (which predict.py
        seeds with `seed=`). An option left None is the checkpoint's own hyperparameter (conf/model/gpt.yaml)."""
        hp = self.hparams
        max_new_tokens = hp.max_new_tokens if max_new_tokens is None else max_new_tokens
        temperature = hp.temperature if temperature is None else temperature
        top_k = hp.top_k if top_k is None else top_k
        return self.decode(self.generate(self.encode(prompt), max_new_tokens, temperature, top_k))

    def predict_step(self, batch: tuple[Tensor, ...] | Tensor, batch_idx: int) -> dict[str, list[str]]:
        """Per prompt (a row of ids, or the inputs of an (x, y) batch): the prompt and the text it continues to, with
        the hyperparameters max_new_tokens, temperature and top_k, drawn from torch's RNG (seeded by `seed=`)."""
        prompts = batch[0] if isinstance(batch, list | tuple) else batch
        hp = self.hparams
        ids = self.generate(prompts, hp.max_new_tokens, hp.temperature, hp.top_k)
        return {"prompt": [self.decode(row) for row in prompts], "text": [self.decode(row) for row in ids]}


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sampling(max_new_tokens: object, temperature: object, top_k: object) -> None:
    """The sampling options, each refused with one line naming it as predict.py's keys do (a bool is no number)."""
    if not (_whole(max_new_tokens) and max_new_tokens >= 0):
        raise UserError(f"max_new_tokens={max_new_tokens!r} must be a whole number >= 0: the characters to add.")
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not (number and math.isfinite(temperature) and temperature >= 0):
        raise UserError(
            f"temperature={temperature!r} must be a number >= 0: 1 samples the model's own probabilities, lower is "
            "more conservative, 0 always takes the most likely character."
        )
    if top_k is not None and not (_whole(top_k) and top_k >= 1):
        raise UserError(f"top_k={top_k!r} must be a whole number >= 1, or null for the whole vocabulary.")
