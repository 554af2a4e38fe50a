"""A GAN on points in the plane, as a user writes one: two networks, two optimizers it steps by hand
(`automatic_optimization = False`), noise drawn in every step, validation and test included. It knows nothing of
hydralight; its metrics are named with underscores (`val_acc`, `test_acc`), as many projects name theirs."""

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from torch.utils.data import DataLoader, TensorDataset


class PointsGAN(pl.LightningModule):
    """A generator of 2-D points from noise, and a discriminator telling them from real ones. `<stage>_acc`: how often
    the discriminator is right on a batch of real and generated points; `<stage>_gap`: the distance between the
    generated and the real points' means."""

    def __init__(self, noise_dim: int = 4, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(noise_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.example_input_array = torch.zeros(2, noise_dim)

    def forward(self, noise: Tensor) -> Tensor:
        return self.generator(noise)

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.hparams.noise_dim, device=self.device)

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> None:
        (real,) = batch
        generator_optimizer, discriminator_optimizer = self.optimizers()
        fake = self(self.noise(len(real)))
        ones, zeros = torch.ones(len(real), 1, device=self.device), torch.zeros(len(real), 1, device=self.device)

        d_loss = bce(self.discriminator(real), ones) + bce(self.discriminator(fake.detach()), zeros)
        discriminator_optimizer.zero_grad()
        self.manual_backward(d_loss)
        discriminator_optimizer.step()

        g_loss = bce(self.discriminator(fake), ones)
        generator_optimizer.zero_grad()
        self.manual_backward(g_loss)
        generator_optimizer.step()
        self.log_dict({"train_d_loss": d_loss, "train_g_loss": g_loss}, on_epoch=True, batch_size=len(real))

    def _evaluate(self, batch: tuple[Tensor], stage: str) -> None:
        (real,) = batch
        fake = self(self.noise(len(real)))  # random numbers in evaluation: eval reproduces them from the run's seed
        right = torch.cat([self.discriminator(real) > 0, self.discriminator(fake) <= 0]).float().mean()
        gap = (fake.mean(dim=0) - real.mean(dim=0)).norm()
        self.log_dict({f"{stage}_acc": right, f"{stage}_gap": gap}, on_epoch=True, batch_size=len(real),
                      sync_dist=True)  # fmt: skip

    def validation_step(self, batch: tuple[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=(0.5, 0.999)),
        ]


class PointsDataModule(pl.LightningDataModule):
    """Real points: a Gaussian blob away from the origin, drawn from its own seeded generator (the same in every
    process)."""

    def __init__(self, n_samples: int = 384, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        points = torch.tensor([2.0, -1.0]) + 0.3 * torch.randn(n_samples, 2, generator=generator)
        third = n_samples // 3
        self.splits = {"train": points[:third], "val": points[third : 2 * third], "test": points[2 * third :]}
        self.batch_size = batch_size

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(self.splits[split]), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
