"""Strategies Lightning 2 lacks: DataParallel, and sharding (tensor parallel + FSDP2) that runs on CPUs too."""

from hydralight.core.strategies.dp import DataParallelStrategy
from hydralight.core.strategies.sharded import ShardedStrategy, data_shard

__all__ = ["DataParallelStrategy", "ShardedStrategy", "data_shard"]
