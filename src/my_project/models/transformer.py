"""A decoder-only (GPT) transformer: token + position embeddings, pre-norm causal self-attention blocks."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and the positions before it."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be a multiple of n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.head_size = n_embd // n_head
        # Output features per head, [q | k | v] within each: a tensor-parallel split of the features (on a head
        # boundary) leaves each process whole heads.
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, time, _ = x.shape
        # (B, T, heads x 3 x head_size) -> three (B, heads, T, head_size); `heads` is this process's share under
        # tensor parallelism.
        heads = self.qkv(x).view(batch, time, -1, 3, self.head_size).permute(3, 0, 2, 1, 4)
        q, k, v = heads.unbind(0)  # not tuple unpacking of a tensor: torch.jit.trace would warn about it
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).reshape(batch, time, -1)
        return self.proj_dropout(self.proj(y))


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)): pre-norm, as GPT-2."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(n_embd)
        self.attention = CausalSelfAttention(n_embd, n_head, dropout)
        self.norm2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Token ids (B, T) with T <= block_size -> next-token logits (B, T, vocab_size).

    The output head is its own matrix, not tied to the token embedding: with a vocabulary of characters it is a tiny
    share of the parameters, so tying saves next to nothing, and untied lets the input and output embeddings differ.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.norm = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2: each residual branch's output projection scaled down by the depth, so the residual stream's variance
        # does not grow with the number of blocks.
        for block in self.blocks:
            for projection in (block.attention.proj, block.mlp[2]):
                nn.init.normal_(projection.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def tensor_parallel_plan(self) -> dict:
        """strategy=model_parallel, as Megatron-LM: in each block, attention's qkv and the MLP's up-projection split
        by output features (whole heads per process), their output projections by input features, so each block
        needs one all-reduce in its forward and one in its backward. Embeddings, norms and the head stay whole."""
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        plan = {}
        for i in range(len(self.blocks)):
            plan[f"blocks.{i}.attention.qkv"] = ColwiseParallel()
            plan[f"blocks.{i}.attention.proj"] = RowwiseParallel()
            plan[f"blocks.{i}.mlp.0"] = ColwiseParallel()
            plan[f"blocks.{i}.mlp.2"] = RowwiseParallel()
        return plan

    def forward(self, ids: Tensor) -> Tensor:
        time = ids.shape[1]
        if time > self.block_size:
            raise ValueError(f"a sequence of {time} tokens is longer than block_size={self.block_size}")
        positions = torch.arange(time, device=ids.device)
        x = self.dropout(self.token_embedding(ids) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
