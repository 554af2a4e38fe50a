"""How a run stops when the world stops it: each catchable signal with its line and its documented exit code,
whatever the run is doing (start-up, training, between training and its test, the test; issue 26, item 10; SIGKILL
cannot be caught: README, 137), and memory running out with a line saying what to lower (item 7)."""

import signal
from pathlib import Path

import pytest
from test_reliability import QUIET, STATEFUL, start_training, stderr_of, wait_for

from hydralight.core.callbacks.resume import STOP_SIGNALS, stops_cleanly
from hydralight.core.errors import Preempted
from hydralight.core.train import train


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda signum: signal.Signals(signum).name)
def test_a_signal_outside_lightnings_stages_stops_at_once_with_its_line(signum):
    """Outside fit and test (start-up; between training and testing) no Lightning handler is installed: SIGTERM or
    SIGHUP stops the run at once as a preemption (exit 75), saying what the same command continues from, and the
    handlers in place before are back afterwards."""
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    name = signal.Signals(signum).name
    with pytest.raises(Preempted, match=rf"stopped by {name}\. what is saved"), stops_cleanly(lambda: "what is saved"):
        signal.raise_signal(signum)
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before


def test_sigterm_while_testing_is_a_preemption_with_a_line(make_cfg):
    """SIGTERM during the test after training (Lightning's evaluation loop raises its SIGTERMException, a SystemExit
    with no code: exit 0 otherwise): Preempted, exit 75, saying training is saved and the same command tests it."""
    cfg = make_cfg("+callbacks.fault._target_=hydralight.testing.faults.SigtermWhileTesting")
    with pytest.raises(Preempted, match=r"while testing\. Training is finished and saved") as stopped:
        train(cfg)
    assert stopped.value.exit_code == 75
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sighup_mid_training_saves_and_exits_75_with_a_line(tmp_path):
    """The terminal that started a run closes (SIGHUP): as a preemption, the run saves preempted.ckpt at the next
    step and exits 75 with its line, instead of dying with 129."""
    run_dir = tmp_path / "run"
    process = start_training(run_dir, *STATEFUL, "trainer.max_epochs=100", *QUIET)
    wait_for(run_dir / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == 75, stderr_of(process)
    assert "preempted: stopped by a signal" in stderr_of(process)
    assert (run_dir / "checkpoints" / "preempted.ckpt").is_file()


def test_out_of_memory_is_one_line_saying_what_to_lower(make_cfg):
    """The allocator fails in a step: a UserError naming data.batch_size and what else to lower, not its traceback."""
    from hydralight.core.errors import UserError

    cfg = make_cfg("+callbacks.fault._target_=hydralight.testing.faults.AllocationFailsAt", "+callbacks.fault.step=1")
    with pytest.raises(UserError, match=r"out of memory \(.*allocate memory.*\)\. Lower data.batch_size \(now 16"):
        train(cfg)


def test_a_stopped_sweep_job_says_to_rerun_the_sweep_in_its_sweep_dir(make_cfg, tmp_path, monkeypatch):
    """Ctrl-C or a signal in a `-m` job: the line says to run the same -m command with hydra.sweep.dir (which the
    sweep's jobs continue in), not hydra.run.dir, which -m ignores."""
    from types import SimpleNamespace

    from hydralight.core import train as train_module

    job_dir = tmp_path / "multiruns" / "2026-12-07" / "3"
    newest = job_dir / "checkpoints" / "last.ckpt"
    monkeypatch.setattr(train_module, "in_multirun", lambda: True)
    monkeypatch.setattr(train_module, "checkpoint_dir", lambda trainer: newest.parent)
    monkeypatch.setattr(train_module, "newest_checkpoint", lambda *args: newest)
    line = train_module.how_to_continue(make_cfg(), SimpleNamespace(default_root_dir=str(job_dir)))
    assert f"run the same -m command with hydra.sweep.dir={job_dir.parent}" in line
    assert "hydra.run.dir" not in line


def test_a_run_dir_whose_checkpoint_is_of_another_model_is_one_line(make_cfg):
    """The same run dir again with another model (a wider net): resume=auto finds a checkpoint that does not fit; one
    UserError naming it and the way out, not Lightning's state-dict traceback; the checkpoint is left as it was."""
    from hydralight.core.errors import UserError

    train(make_cfg("test=false"))
    cfg = make_cfg("test=false", "model.net.hidden=16")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(UserError, match=r"last.ckpt' was written by another model \(other shapes: net.0.bias"):
        train(cfg)
    assert last.read_bytes() == before


def test_eval_on_data_its_model_cannot_read_is_one_line(make_cfg, tmp_path):
    """eval.py data=<option> with data the checkpoint's model cannot read (images for a 4-feature regression): one
    UserError naming data= and the model, not the layer's shape error."""
    from hydralight.core.errors import UserError
    from hydralight.core.evaluate import evaluate

    cfg = make_cfg("test=false")
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    evaluation = make_cfg(f"ckpt_path={checkpoint}", "data=images", config_name="eval")
    with pytest.raises(UserError, match=r"data=images: .*NetRegression cannot read this data"):
        evaluate(evaluation, overrides=["data=images", f"ckpt_path={checkpoint}"])


def test_a_preempted_run_that_finishes_leaves_no_stale_preemption_checkpoint(make_cfg):
    """SIGTERM saves preempted.ckpt; the same command continues from it and finishes: preempted.ckpt is then gone
    (spent), so no later resume=auto can pick it over the run's newer checkpoints."""
    fault = ("+callbacks.fault._target_=hydralight.testing.faults.SigtermAt", "+callbacks.fault.step=1")
    cfg = make_cfg("trainer.max_epochs=2", "test=false", *fault)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    with pytest.raises(Preempted):
        train(cfg)
    assert (checkpoints / "preempted.ckpt").is_file()
    train(make_cfg("trainer.max_epochs=2", "test=false"))
    assert not (checkpoints / "preempted.ckpt").exists() and (checkpoints / "last.ckpt").is_file()


def test_a_mid_epoch_resume_with_a_plain_loader_says_it_restarts_the_epoch(make_cfg, recwarn):
    """A data module of the user's own returning a plain DataLoader (the regression's) resumed mid-epoch: one warning
    saying the epoch starts again and what an exact resume needs (issue 27, item 5)."""
    fault = ("+callbacks.fault._target_=hydralight.testing.faults.SigtermAt", "+callbacks.fault.step=1")
    with pytest.raises(Preempted):  # step 1 of a 2-step epoch: preempted.ckpt holds the middle of the epoch
        train(make_cfg("trainer.max_epochs=2", "test=false", *fault))
    train(make_cfg("trainer.max_epochs=2", "test=false"))
    said = [str(warning.message) for warning in recwarn if "keeps no position" in str(warning.message)]
    assert said and "(DataLoader)" in said[0] and "StatefulDataLoader" in said[0]
