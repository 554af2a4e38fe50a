"""Lightning's BoringModel logs nothing; this subclass logs its loss, so that `monitor=val/loss` has a metric."""

from typing import Any

from lightning.pytorch.demos.boring_classes import BoringModel


class LoggingBoringModel(BoringModel):
    """BoringModel, unchanged but for `val/loss` and `test/loss`."""

    def validation_step(self, batch: Any, batch_idx: int) -> dict:
        loss = self.step(batch)
        self.log("val/loss", loss, on_epoch=True)
        return {"x": loss}

    def test_step(self, batch: Any, batch_idx: int) -> dict:
        loss = self.step(batch)
        self.log("test/loss", loss, on_epoch=True)
        return {"y": loss}
