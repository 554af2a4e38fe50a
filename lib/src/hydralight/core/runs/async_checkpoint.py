"""`async_checkpoint=true`: checkpoints are written to disk by a background thread while training goes on.

Lightning's `AsyncCheckpointIO` (2.6.6) takes the right first step: it clones every tensor of a checkpoint before its
thread serializes it, so the next optimizer step cannot leak into the file. It leaves three things to chance, which
this subclass settles:
- The snapshot goes to CPU memory. Lightning clones on the tensors' own device, so a GPU run holds a second copy of
  its weights and optimizer state in GPU memory until the write ends (Lightning #21630). Tensors that share storage
  (tied weights) share their copy, so the file is laid out exactly as a synchronous save would lay it out.
- A remove and a load wait their turn behind the writes already submitted. Lightning removes at once: when
  ModelCheckpoint replaces its best while that best is still being written, the removal finds no file and the
  write then lands, leaving a stale checkpoint. And a load right after a save (the tuners' restore) finds no file.
- An error from the background (a full disk) is raised once, at the next checkpoint operation or at the end of the
  stage; Lightning raises it again at every teardown after. And a remove submitted after a failed write is skipped:
  ModelCheckpoint removes the previous best right after it asks for the new one, which then does not exist.

Lightning calls `teardown` at the end of each stage (fit, test) and when a stage stops on an exception (a signal, a
NaN, Ctrl-C), before control returns: by then every checkpoint submitted is on disk, the preemption checkpoint too.
Each write is the wrapped CheckpointIO's (AtomicCheckpointIO: whole or not at all), so a kill mid-write leaves the
previous file intact.
"""

import concurrent.futures
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from hydralight.core.errors import UserError

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies import Strategy


def cpu_snapshot(checkpoint: Any) -> Any:
    """`checkpoint` with every tensor replaced by a CPU copy taken now. Tensors that share a storage (tied weights,
    views) share one copied storage, as `torch.save` would have stored the originals."""
    copies: dict[tuple[Any, ...], torch.UntypedStorage] = {}

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if type(tensor) is not torch.Tensor or tensor.layout != torch.strided:
            return tensor.to("cpu", copy=True)  # subclasses, sparse tensors: a plain copy
        storage = tensor.untyped_storage()
        key = (storage.device, storage.data_ptr(), storage.nbytes())
        if key not in copies:
            if tensor.storage_offset() == 0 and tensor.is_contiguous() and _nbytes(tensor) == storage.nbytes():
                copied = tensor.to("cpu", copy=True)  # the usual case: the tensor is its whole storage
                copies[key] = copied.untyped_storage()
                return copied
            whole = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
            copies[key] = whole.to("cpu", copy=True).untyped_storage()
        view = torch.empty(0, dtype=tensor.dtype)
        return view.set_(copies[key], tensor.storage_offset(), tensor.size(), tensor.stride())

    return apply_to_collection(checkpoint, torch.Tensor, copy)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class BackgroundCheckpointIO(AsyncCheckpointIO):
    """Lightning's AsyncCheckpointIO with CPU snapshots, removes and loads in order with the writes, and each
    background error raised once. One thread: operations run in the order they were asked for."""

    def __init__(self, checkpoint_io: Any = None) -> None:
        super().__init__(checkpoint_io)
        self._pending: list[concurrent.futures.Future] = []
        self._write_failed = False  # set on the background thread, read there: operations run in order

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        snapshot = cpu_snapshot(checkpoint)  # on the caller's thread, before training touches a tensor again
        self._submit(self._save, snapshot, path, storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        if self._pending:
            self._submit(self._remove_unless_a_write_failed, path)
        else:  # nothing to wait for: at once, as a synchronous run would (no thread started for it)
            self.checkpoint_io.remove_checkpoint(path)

    def _save(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None) -> None:
        try:
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options=storage_options)
        except BaseException:
            self._write_failed = True
            raise

    def _remove_unless_a_write_failed(self, path: Any) -> None:
        if not self._write_failed:  # else the file it was to make way for is not there: keep it
            self.checkpoint_io.remove_checkpoint(path)

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.wait()
        return self.checkpoint_io.load_checkpoint(*args, **kwargs)

    def wait(self) -> None:
        """Return once every operation submitted so far is done; raise the first error among them."""
        concurrent.futures.wait(self._pending)
        self._raise_failed()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def _submit(self, function: Any, *args: Any, **kwargs: Any) -> None:
        self._raise_failed()
        self._ensure_setup()
        assert self._executor is not None
        self._pending.append(self._executor.submit(function, *args, **kwargs))

    def _raise_failed(self) -> None:
        """Forget the finished operations; raise the first error among them (once: it is forgotten too)."""
        done = [future for future in self._pending if future.done()]
        self._pending = [future for future in self._pending if not future.done()]
        for future in done:
            if future.exception() is not None:
                raise future.exception()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (ddp_spawn sends the Trainer to its processes): threads and futures stay in this process."""
        return {**self.__dict__, "_executor": None, "_pending": []}


def wait_for_checkpoints(trainer: "Trainer") -> None:
    """Block until the checkpoints submitted so far are on disk (no-op when they are written synchronously): for
    code that reads the checkpoint dir while training is still running."""
    checkpoint_io = trainer.strategy.checkpoint_io
    if isinstance(checkpoint_io, BackgroundCheckpointIO):
        checkpoint_io.wait()


def check_async_checkpoint(strategy: "Strategy | str") -> None:
    """Refuse strategies that write their checkpoints themselves, bypassing the CheckpointIO (sharded checkpoints):
    async_checkpoint=true would change nothing there, silently."""
    name = type(strategy).__name__
    sharded = (
        getattr(strategy, "_save_distributed_checkpoint", False)  # ModelParallelStrategy(save_distributed_checkpoint)
        or getattr(strategy, "_state_dict_type", "full") == "sharded"  # FSDPStrategy(state_dict_type="sharded")
        or name == "DeepSpeedStrategy"
    )
    if sharded:
        raise UserError(
            f"async_checkpoint=true: {name} writes sharded checkpoints itself (one file per process, through "
            "torch.distributed.checkpoint or DeepSpeed), not through Lightning's CheckpointIO, so there is no "
            "write to move to the background. Use async_checkpoint=false with it, or strategy=fsdp or "
            "strategy=model_parallel: they save one consolidated file and work with async_checkpoint=true."
        )
