"""A test suite any LightningModule inherits: subclass `LightningModuleContract` in a project's tests and say how to
build the module and a batch. Not collected by itself (no `Test` class): only its subclasses run. Needs pytest."""

import functools
import multiprocessing
import socket
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.data import extract_batch_size
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor
from torch.utils.data import DataLoader

from hydralight.core.export import call  # forward on example_input_array as export and Lightning call it

SEED = 0
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}  # the DDP property's two processes talk here


def free_port() -> int:
    """A TCP port nobody listens on now, on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What every contract run shares: one CPU process, nothing written, no validation, no bars.
QUIET_CPU = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
}


class LightningModuleContract:
    """What every LightningModule of a task must do, checked through a real Lightning `Trainer` on CPU.

    Subclass it in a `tests/test_*.py` file, in a class whose name starts with `Test`:

        from hydralight.testing.contract import LightningModuleContract

        class TestMyModel(LightningModuleContract):
            def make_module(self) -> LightningModule:
                return MyModel(hidden=32, dropout=0.0)  # small, and deterministic in train mode

            def make_batch(self):
                return torch.randn(16, 8), torch.randint(4, (16,))  # what training_step takes; size divisible by 4

    `make_module` is called after `torch.manual_seed`, so two calls build equal modules. Its `training_step(batch, 0)`
    returns the loss (a Tensor, or a dict with "loss"); `example_input_array` is set. What the properties assume:
    - No dropout (build the module with dropout 0): its masks change from run to run, so no two runs could be
      compared. The forward comparisons run in eval mode anyway.
    - Accumulating 4 micro-batches of b equals one step on the 4b batch, and DDP over 2 processes equals one process
      on the doubled batch, only for a loss that is a mean over equal-sized micro-batches of independent samples:
      BatchNorm couples a batch's samples (build without it). These two train with plain SGD, not the module's
      optimizer: Adam's update ignores the gradient's scale, so a loss summed instead of averaged would pass.
    Batches may be tensors, tuples or dicts (Hugging Face's `{"input_ids", "attention_mask", "labels"}`). A module
    that steps its own optimizers (`automatic_optimization = False`, a GAN) runs every property that applies to it:
    its step is checked to repeat itself from the same seed, DDP to keep the replicas equal; the properties that
    need a loss Lightning minimizes (a lower loss, overfitting, accumulation) skip, saying why.
    A property that does not hold by design is switched off in the subclass, e.g. for a net with BatchNorm:
    `test_accumulating_4_micro_batches_equals_one_batch_of_4x = None`.
    Class attributes tune the rest (overfit_steps, overfit_ratio, sgd_lr, rtol, atol).
    """

    # The contract fits without validation data, which Lightning would otherwise note on every run.
    pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")

    equality_steps: ClassVar[int] = 3  # optimizer steps of each accumulation / DDP run
    lowering_steps: ClassVar[int] = 3  # steps after which the module's own optimizer must have lowered the loss
    overfit_steps: ClassVar[int] = 100  # steps of the module's own optimizer on one batch ...
    overfit_ratio: ClassVar[float] = 0.1  # ... to bring its loss below this fraction of the first loss
    sgd_lr: ClassVar[float] = 0.1  # of the plain SGD the equality runs train with
    rtol: ClassVar[float] = 1e-5  # final weights of runs that should be equal: fp32 sums in another order
    atol: ClassVar[float] = 1e-6

    @pytest.fixture(autouse=True)
    def one_thread(self) -> Iterator[None]:
        """Tiny models gain nothing from intra-op threads, and on a busy machine their waits cost many times the
        step: one thread per test, the setting given back after it."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    # What the subclass provides.
    def make_module(self) -> LightningModule:
        raise NotImplementedError("build a small, dropout-free instance of your LightningModule")

    def make_batch(self) -> Any:
        raise NotImplementedError("return one batch for training_step, with a batch size divisible by 4")

    def fresh_module(self, seed: int = SEED) -> LightningModule:
        torch.manual_seed(seed)
        return self.make_module()

    def divisible_batch(self, parts: int) -> tuple[Any, int]:
        """The subclass's batch and its size, which must split into `parts` equal micro-batches."""
        batch = self.make_batch()
        size = extract_batch_size(batch)
        assert size % parts == 0, f"make_batch() gave a batch of {size}: it must split into {parts} equal parts"
        return batch, size

    # The properties.
    def test_forward_on_example_input_array(self) -> None:
        """`module(module.example_input_array)` runs in eval mode and gives finite outputs (export and the model
        summary use the same input)."""
        module = self.fresh_module().eval()
        assert module.example_input_array is not None, "set example_input_array: export and the summary need it"
        with torch.no_grad():
            outputs = call(module, module.example_input_array)
        assert tensors_of(outputs), "forward returned no tensor"
        assert all(t.isfinite().all() for t in tensors_of(outputs))

    def skip_unless_lightning_optimizes(self, what: str) -> None:
        """Skip a property that needs Lightning's own optimization loop, saying why, for a module that steps its own
        optimizers."""
        module = self.fresh_module()
        if not module.automatic_optimization:
            pytest.skip(f"{type(module).__name__} steps its own optimizers (automatic_optimization=False): {what}")

    def test_training_step_gives_the_same_loss_every_time(self) -> None:
        """In train mode the same weights and batch give the same finite scalar loss whatever the RNG holds: what
        every comparison of two runs below needs (dropout breaks it). A module stepping its own optimizers: one
        training step through a Trainer from the same weights, batch and seed ends with the same weights (its step
        may draw noise, as a GAN's does)."""
        if not self.fresh_module().automatic_optimization:
            first, second = (self.weights_after_one_manual_step(seed=1) for _ in range(2))
            assert_same_weights(first, second, rtol=0, atol=0)
            return
        module, batch = self.fresh_module().train(), self.make_batch()
        torch.manual_seed(1)
        first = training_loss(module, batch)
        torch.manual_seed(2)
        second = training_loss(module, batch)
        assert first.ndim == 0 and first.requires_grad and first.isfinite()
        assert torch.equal(first, second), f"train-mode loss {first} then {second}: build the module without dropout"

    def weights_after_one_manual_step(self, seed: int) -> dict[str, Tensor]:
        module = self.fresh_module()
        torch.manual_seed(seed)
        Trainer(**QUIET_CPU, max_steps=1).fit(module, train_dataloaders=repeated(self.make_batch(), 1))
        return weights(module)

    def test_the_first_optimizer_steps_lower_the_loss(self) -> None:
        """The first `lowering_steps` steps of the module's own optimizer (and scheduler) on a fixed batch lower that
        batch's loss (more than one: a warm-up from a learning rate of 0, as Hugging Face's, steps first at 0)."""
        self.skip_unless_lightning_optimizes(NO_LOSS)
        losses = fit_on_one_batch(self.fresh_module(), self.make_batch(), steps=self.lowering_steps + 1)
        assert losses[-1] < losses[0], f"loss before the first step {losses[0]}, after {self.lowering_steps}: {losses}"

    def test_overfits_one_batch(self) -> None:
        """`overfit_steps` steps of the module's own optimizer on one batch bring its loss below `overfit_ratio` x
        the first loss: the module can learn at all."""
        self.skip_unless_lightning_optimizes(NO_LOSS)
        losses = fit_on_one_batch(self.fresh_module(), self.make_batch(), steps=self.overfit_steps)
        assert losses[-1] < self.overfit_ratio * losses[0], f"loss {losses[0]} -> {losses[-1]}"

    def test_checkpoint_loads_weights_only_into_a_fresh_module(self, tmp_path: Path) -> None:
        """A Trainer checkpoint after two steps loads with `torch.load(weights_only=True)` (the safe default since
        torch 2.6: no pickled objects in hparams), and a differently seeded module given its state dict computes
        the trained module's outputs on `example_input_array`, exactly."""
        trained = self.fresh_module()
        trainer = Trainer(**QUIET_CPU, max_steps=2)
        trainer.fit(trained, train_dataloaders=repeated(self.make_batch(), 2))
        trainer.save_checkpoint(tmp_path / "module.ckpt")

        checkpoint = torch.load(tmp_path / "module.ckpt", weights_only=True, map_location="cpu")
        restored = self.fresh_module(seed=SEED + 1).eval()
        trained.eval()
        example = trained.example_input_array
        with torch.no_grad():
            expected = tensors_of(call(trained, example))
            before = tensors_of(call(restored, example))
            assert not all(map(torch.equal, before, expected)), "untrained, other seed, same outputs: proves nothing"
            restored.load_state_dict(checkpoint["state_dict"])
            for got, want in zip(tensors_of(call(restored, example)), expected, strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=0, msg=lambda m: f"state dict misses state: {m}")

    def test_accumulating_4_micro_batches_equals_one_batch_of_4x(self) -> None:
        """accumulate_grad_batches=4 over 4 micro-batches of b ends with the weights of one step on the 4b batch
        (plain SGD, `equality_steps` steps), to rtol/atol; and the weights did move."""
        self.skip_unless_lightning_optimizes(
            "Lightning accumulates only the steps it takes itself; the module accumulates in its own training_step"
        )
        batch, size = self.divisible_batch(4)
        accumulated = self.fresh_module()
        initial = weights(accumulated)
        Trainer(**QUIET_CPU, max_steps=self.equality_steps, accumulate_grad_batches=4).fit(
            with_plain_sgd(accumulated, self.sgd_lr), train_dataloaders=split(batch, size // 4)
        )
        single = self.fresh_module()
        Trainer(**QUIET_CPU, max_steps=self.equality_steps).fit(
            with_plain_sgd(single, self.sgd_lr), train_dataloaders=split(batch, size)
        )
        assert_moved(initial, weights(single), self.atol)
        assert_same_weights(weights(accumulated), weights(single), self.rtol, self.atol)

    @pytest.mark.slow
    def test_ddp_on_2_cpu_processes_equals_one_process_of_the_doubled_batch(self, monkeypatch) -> None:
        """DDP on 2 CPU processes (gloo), each rank at half the batch (Lightning's own distributed sampler), ends with
        the weights of one process on the whole batch (plain SGD), to rtol/atol. The ranks are forks of this process
        (strategy=ddp_fork) where the OS has fork: a spawned rank would import torch and Lightning afresh, and unpickle
        the module; else spawned (ddp_spawn)."""
        for name, value in {**LOOPBACK, "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}.items():
            monkeypatch.setenv(name, value)  # restored afterwards: Lightning leaves MASTER_PORT set
        batch, size = self.divisible_batch(2)
        if not self.fresh_module().automatic_optimization:
            self.check_ddp_keeps_replicas_equal(batch, size)
            return
        # A dataset of exactly the doubled batch: each step covers all of it, whatever order a sampler picks.
        distributed = self.fresh_module()
        initial = weights(distributed)
        strategy = "ddp_fork" if "fork" in multiprocessing.get_all_start_methods() else "ddp_spawn"
        Trainer(**{**QUIET_CPU, "devices": 2}, strategy=strategy, max_steps=self.equality_steps).fit(
            with_plain_sgd(distributed, self.sgd_lr), train_dataloaders=split(batch, size // 2)
        )  # both load rank 0's final weights back into `distributed`
        single = self.fresh_module()
        Trainer(**QUIET_CPU, max_steps=self.equality_steps).fit(
            with_plain_sgd(single, self.sgd_lr), train_dataloaders=split(batch, size)
        )
        assert_moved(initial, weights(single), self.atol)
        assert_same_weights(weights(distributed), weights(single), self.rtol, self.atol)

    def check_ddp_keeps_replicas_equal(self, batch: Any, size: int) -> None:
        """A module stepping its own optimizers under DDP (its own optimizers; DDP told of the parameters each of
        its backward passes leaves unused): after `equality_steps` steps both ranks hold the same weights, and they
        moved. Not compared with one process: its steps may draw noise, which each rank draws for itself."""
        from lightning.pytorch.strategies import DDPStrategy

        module = self.fresh_module()
        initial = weights(module)
        start = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        strategy = DDPStrategy(start_method=start, find_unused_parameters=True)
        Trainer(**{**QUIET_CPU, "devices": 2}, strategy=strategy, max_steps=self.equality_steps,
                callbacks=[ReplicasEqual(self.rtol, self.atol)]).fit(
            module, train_dataloaders=split(batch, size // 2)
        )  # fmt: skip
        assert_moved(initial, weights(module), self.atol)


NO_LOSS = "its training_step returns no loss Lightning minimizes (a GAN's two losses pull against each other)"


class ReplicasEqual(Callback):
    """At the end of training, every rank's weights equal rank 0's (an error in a rank fails its process)."""

    def __init__(self, rtol: float, atol: float) -> None:
        self.rtol, self.atol = rtol, atol

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        for rank in range(1, len(gathered)):
            message = f"rank {rank}'s weights differ from rank 0's"
            torch.testing.assert_close(
                gathered[rank], gathered[0], rtol=self.rtol, atol=self.atol, msg=lambda m, s=message: f"{s}: {m}"
            )


# Helpers: batches, losses and weights.
def tensors_of(outputs: Any) -> list[Tensor]:
    found: list[Tensor] = []
    apply_to_collection(outputs, Tensor, found.append)
    return found


def training_loss(module: LightningModule, batch: Any) -> Tensor:
    """The loss of the module's own `training_step`, called without a Trainer (where `self.log` only warns)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)`")
        output = module.training_step(batch, 0)
    return output["loss"] if isinstance(output, Mapping) else output


class LossRecorder(Callback):
    """The loss of every training step, as Lightning's closure returned it (before that step's update)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self.losses.append(float(loss))


def repeated(batch: Any, steps: int) -> DataLoader:
    """One epoch of `steps` copies of `batch`, each served as it is (batch_size=None: no re-collation)."""
    return DataLoader([batch] * steps, batch_size=None)


def split(batch: Any, micro_batch_size: int) -> DataLoader:
    """The samples of `batch`, in order, re-collated into batches of `micro_batch_size`."""
    samples = [apply_to_collection(batch, Tensor, lambda t, i=i: t[i]) for i in range(extract_batch_size(batch))]
    return DataLoader(samples, batch_size=micro_batch_size, shuffle=False)


def fit_on_one_batch(module: LightningModule, batch: Any, steps: int) -> list[float]:
    """Train `steps` steps of the module's own optimizer on `batch`; the loss of each step before its update."""
    recorder = LossRecorder()
    Trainer(**QUIET_CPU, max_steps=steps, callbacks=[recorder]).fit(module, train_dataloaders=repeated(batch, steps))
    assert len(recorder.losses) == steps
    return recorder.losses


def plain_sgd(module: LightningModule, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=lr)


def with_plain_sgd(module: LightningModule, lr: float) -> LightningModule:
    """The module, its `configure_optimizers` replaced by SGD without momentum (a partial, which ddp_spawn pickles
    and Lightning sees as an override)."""
    module.configure_optimizers = functools.partial(plain_sgd, module, lr)
    return module


def weights(module: LightningModule) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def assert_moved(before: dict[str, Tensor], after: dict[str, Tensor], atol: float) -> None:
    """Training changed some weight by far more than the tolerance, or an equality would prove nothing."""
    moved = max((after[name] - before[name]).abs().max().item() for name in before)
    assert moved > 100 * atol, f"training moved no weight by more than {100 * atol} (the largest change: {moved})"


def assert_same_weights(got: dict[str, Tensor], want: dict[str, Tensor], rtol: float, atol: float) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
