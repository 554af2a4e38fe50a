"""Strategies Lightning 2 lacks: DataParallel (`dp`), and sharding (tensor parallel + FSDP2: `sharded`) that runs on
CPUs too. Each is imported when it is first named (the strategy config's `_target_`), so a run loads only the one it
uses; `data_shard`, which every data module and the throughput callback ask, is here."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

_MODULE_OF = {"DataParallelStrategy": "dp", "ShardedStrategy": "sharded"}
__all__ = ["data_shard", *sorted(_MODULE_OF)]


def data_shard(trainer: "Trainer | None") -> tuple[int, int]:
    """(number of data shards, this process's shard): one per data-parallel process, as Lightning's own sampler
    shards (`distributed_sampler_kwargs`). The processes of a tensor-parallel group share one shard."""
    if trainer is None or trainer.world_size == 1:
        return 1, 0
    kwargs = trainer.distributed_sampler_kwargs or {}
    return kwargs.get("num_replicas", trainer.world_size), kwargs.get("rank", trainer.global_rank)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
