"""The total gradient norm and clipping by it, for plain tensors and for DTensors split over several device meshes.

Under strategy=model_parallel the tensor-parallel parameters live on the 2-D (data x tensor parallel) mesh and the
rest on the data-parallel mesh; torch's `clip_grad_norm_` stacks all their norms in one op and fails on the mixed
meshes. Here each mesh's norms are reduced among themselves and made whole (`full_tensor`) before they are combined.
"""

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor

from hydralight.compat.torch import foreach_norm


def total_norm(grads: list[Tensor], norm_type: float = 2.0) -> Tensor:
    """The norm of all of `grads` as one vector, a plain tensor on every process (one fused pass per mesh)."""
    from torch.distributed.tensor import DTensor

    by_mesh: dict[object, list[Tensor]] = defaultdict(list)
    for grad in grads:
        by_mesh[grad.device_mesh if isinstance(grad, DTensor) else None].append(grad)
    norms = []
    for group in by_mesh.values():
        norm = torch.linalg.vector_norm(torch.stack(foreach_norm(group, norm_type)), norm_type)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


def clip_by_norm(parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """`torch.nn.utils.clip_grad_norm_` over any mix of meshes: gradients scaled so their total norm is at most
    `max_norm`. Returns the norm before clipping."""
    grads = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = total_norm(grads, norm_type)
    scale = min(1.0, max_norm / (float(norm) + 1e-6))  # torch's own epsilon; a float multiplies DTensors too
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return norm
