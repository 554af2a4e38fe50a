"""Step checkpoints: `last.ckpt` rewritten every N optimizer steps, and a run killed between two of them resumes
exactly, mid-epoch, because the loaders' position and shuffle order are in the checkpoint. The task is
hydralight.testing's stateful one (dropout, Adam, the library's in-memory and on-disk data modules)."""

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from test_reliability import QUIET, assert_identical_training_state, load_state, start_training, stderr_of

from hydralight.testing import assert_ok, compose, run_cli, write_project

EPOCHS = 3
STEP_CHECKPOINTS = "callbacks.last_checkpoint.every_n_train_steps=3"
STATEFUL = ("model=stateful", "data=stateful")  # 20 training steps an epoch on one process
# Shuffling, dropout, Adam, deterministic kernels; the loader workers are the case's.
RUN = (*QUIET, *STATEFUL, f"trainer.max_epochs={EPOCHS}", "trainer.deterministic=true", "test=false")
CASES = {
    "one process, no workers": ("data.num_workers=0",),
    "one process, 2 workers": ("data.num_workers=2",),
    "ddp x2, 2 workers each": ("data.num_workers=2", "strategy=ddp", "trainer.devices=2"),
    "on-disk data, 2 workers": ("data=ondisk_stateful", "model.net.in_features=4", "data.num_workers=2"),
}
# The uninterrupted run each case must equal: one process trains the same with any number of workers.
REFERENCES = {
    "one process, no workers": "one process, no workers",
    "one process, 2 workers": "one process, no workers",
    "ddp x2, 2 workers each": "ddp x2, 2 workers each",
    "on-disk data, 2 workers": "on-disk data, 2 workers",
}


def last_step(run_dir: Path) -> int | None:
    return last_step_of(run_dir / "checkpoints" / "last.ckpt")


def last_step_of(path: Path) -> int | None:
    try:
        return load_state(path)["global_step"]
    except (FileNotFoundError, RuntimeError, EOFError):  # not written yet, or being replaced this instant
        return None


def kill_mid_epoch(run_dir: Path, args: tuple[str, ...], total: int, project: Path) -> int:
    """SIGKILL the run at a random moment once its last.ckpt is past the first epoch; return the step that
    last.ckpt holds. A kill that lands at an epoch's end (or after training) tests nothing new: tried again. So is
    one that lands between an epoch's end checkpoints (the best one written, last.ckpt not yet): the resume then
    starts from the best one, which holds more steps."""
    steps_per_epoch = total // EPOCHS
    for _ in range(5):
        shutil.rmtree(run_dir, ignore_errors=True)
        process = start_training(run_dir, *args, project=project)
        target = random.randrange(steps_per_epoch + 1, total - 3)
        deadline = time.monotonic() + 240
        while (last_step(run_dir) or 0) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        if process.returncode != -signal.SIGKILL:
            pytest.fail(f"training ended (exit {process.returncode}) before step {target}:\n{stderr_of(process)}")
        killed_at = last_step(run_dir)
        steps = [last_step_of(path) for path in (run_dir / "checkpoints").glob("*.ckpt")]
        newest = max((step for step in steps if step is not None), default=None)
        if killed_at is not None and killed_at == newest and killed_at % steps_per_epoch and killed_at < total:
            return killed_at
    pytest.fail("every kill landed on an epoch's end or after the last step")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """hydralight.testing's project, with its stateful rows prepared on disk (`python prepare.py source=stateful`)
    for the on-disk case when that case first asks for them."""
    return write_project(tmp_path_factory.mktemp("project"))


def case_args(case: str, project: Path) -> tuple[str, ...]:
    """The case's arguments; the on-disk case reads the rows prepared on disk, prepared when first asked for."""
    if "on-disk" not in case:
        return CASES[case]
    prepared = project / "data" / "stateful"
    if not prepared.exists():
        pytest.importorskip("datasets", reason="the ondisk extra: pip install -e 'lib[ondisk]'")
        from hydralight.core.prepare import prepare

        prepare(compose("prepare", project / "outputs" / "prepare", ("source=stateful", f"out={prepared}")))
    return (*CASES[case], f"data.path={prepared}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, project) -> dict[str, Path]:
    """The final last.ckpt of an uninterrupted run of each reference case, run when first asked for."""
    runs = {}

    def reference(case: str) -> Path:
        name = REFERENCES[case]
        if name not in runs:
            run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
            assert_ok(run_cli("train.py", *RUN, *case_args(name, project), f"hydra.run.dir={run_dir}", cwd=project))
            runs[name] = run_dir / "checkpoints" / "last.ckpt"
        return runs[name]

    return reference


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_run_killed_mid_epoch_resumes_bitwise_equal(case, uninterrupted, project, tmp_path):
    """Step checkpoints on, SIGKILL at a random step inside an epoch, the same command again: the final weights and
    optimizer state equal the uninterrupted run's exactly, with and without loader workers, under DDP too, and
    with the data read from disk."""
    args = (*RUN, *case_args(case, project), STEP_CHECKPOINTS)
    reference = uninterrupted(case)
    total = load_state(reference)["global_step"]  # 20 steps per epoch on one process, 10 on two
    killed_at = kill_mid_epoch(tmp_path, args, total, project)

    result = run_cli("train.py", *args, f"hydra.run.dir={tmp_path}", cwd=project)
    assert_ok(result)
    output = result.stderr + result.stdout
    assert f"Resuming from {tmp_path / 'checkpoints' / 'last.ckpt'}" in output, (
        f"killed with last.ckpt at step {killed_at}; the checkpoints now: "
        f"{ {path.name: last_step_of(path) for path in (tmp_path / 'checkpoints').glob('*.ckpt')} }; "
        f"what the run said of them: {[line for line in output.splitlines() if 'Resum' in line or 'Skipping' in line]}"
    )
    assert "not resumable" not in result.stderr  # Lightning's warning for a loader that cannot resume mid-epoch
    assert load_state(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == total > killed_at
    assert_identical_training_state(reference, tmp_path / "checkpoints" / "last.ckpt")


def test_step_checkpoints_rewrite_last_ckpt_mid_epoch_and_at_each_epochs_end(make_cfg, monkeypatch):
    """every_n_train_steps=3 over epochs of 10 steps: last.ckpt at steps 3, 6, 9, then 10 at the epoch's end, after
    its validation (a step save on an epoch's last batch would come before it), 12, 15, 18 and 20."""
    from hydralight.core.callbacks import LastCheckpoint
    from hydralight.core.train import train

    saves = []
    save = LastCheckpoint._save_checkpoint

    def record(self, trainer, filepath):
        saves.append((trainer.global_step, "val/loss" in trainer.callback_metrics))
        save(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", record)
    train(make_cfg(*STATEFUL, "trainer.max_epochs=2", "trainer.limit_train_batches=10", STEP_CHECKPOINTS, "test=false"))
    assert [step for step, _ in saves] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert [validated for step, validated in saves if step in (3, 10)] == [False, True]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"every_n_train_steps": 0}, r"every_n_train_steps=0 must be a whole number >= 1, or null"),
        ({"train_time_interval": "abc"}, r"train_time_interval='abc' is not a time interval. Use 'HH:MM:SS'"),
        ({"train_time_interval": 0}, r"train_time_interval=0 must be longer than zero"),
        ({"every_n_train_steps": 5, "train_time_interval": 60}, r"are both set: choose one of them"),
    ],
)
def test_a_bad_step_or_time_trigger_is_one_clear_error(arguments, message):
    from hydralight.core.callbacks import LastCheckpoint
    from hydralight.core.errors import UserError

    with pytest.raises(UserError, match=message):
        LastCheckpoint(**arguments)


def test_time_intervals_read_like_max_time():
    """'HH:MM:SS', 'DD:HH:MM:SS', seconds and timedelta's keywords all name the same interval."""
    from datetime import timedelta

    from hydralight.core.callbacks.resume import time_interval

    forms = ["00:30:00", "00:00:30:00", 1800, {"minutes": 30}]
    assert {time_interval(form, "k") for form in forms} == {timedelta(minutes=30)}


ONE_CYCLE = ("model.scheduler={scheduler:{_target_:torch.optim.lr_scheduler.OneCycleLR,_partial_:true,max_lr:0.01},"
             "interval:step}")  # fmt: skip


def test_a_schedule_sized_by_the_run_resumes_mid_epoch_exactly(tmp_path):
    """A schedule whose length is the run's (OneCycleLR, given the run's total steps by hydralight.modules'
    with_scheduler) asks Lightning for the number of steps in configure_optimizers, which builds the train loader
    before the checkpoint is read: the resumed epoch must still go on from the saved batch, not from its first.
    Crashed after step 15 (mid-epoch 2), then resumed."""
    from hydralight.core.train import train

    args = (*QUIET, *STATEFUL, "trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
            ONE_CYCLE, STEP_CHECKPOINTS, "data.num_workers=0", "test=false")  # fmt: skip
    crash = ("+callbacks.crash._target_=hydralight.testing.faults.CrashAt", "+callbacks.crash.step=15")
    train(compose("train", tmp_path / "uninterrupted", args))
    with pytest.raises(RuntimeError, match="crash at step 15"):
        train(compose("train", tmp_path / "resumed", (*args, *crash)))
    assert load_state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 15
    train(compose("train", tmp_path / "resumed", args))
    final = [tmp_path / run / "checkpoints" / "last.ckpt" for run in ("uninterrupted", "resumed")]
    assert load_state(final[1])["global_step"] == 20
    assert_identical_training_state(*final)
