import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten, then Linear -> [BatchNorm] -> ReLU -> Dropout for each hidden size, then a linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers += [nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def tensor_parallel_plan(self) -> dict:
        """strategy=model_parallel: each Linear split by its output features across the tensor-parallel processes,
        its output gathered whole again (a BatchNorm or the loss after it sees every feature)."""
        from torch.distributed.tensor import Replicate
        from torch.distributed.tensor.parallel import ColwiseParallel

        linears = [str(i) for i, layer in enumerate(self.layers) if isinstance(layer, nn.Linear)]
        return {f"layers.{i}": ColwiseParallel(output_layouts=Replicate()) for i in linears}
