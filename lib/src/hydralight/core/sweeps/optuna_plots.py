"""Pictures of an Optuna study at the end of its sweep: the monitored metric of each trial, and how much each searched
parameter mattered, as PNGs in the sweep dir beside `optimization_results.yaml`.

matplotlib is optional (`pip install -e ".[plots]"`): nothing here imports it until a picture is drawn, and without it
the sweep's report says so in one line. The figures are drawn outside pyplot (no GUI backend, no global state), as
hydralight.core.callbacks.plots draws a run's.
"""

import importlib.util
import warnings
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.importance import BaseImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState

from hydralight.core import files

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRIC_PNG = "optuna_metric_per_trial.png"
IMPORTANCE_PNG = "optuna_param_importance.png"
# How the metric plot draws a trial of each state; a pruned trial at its last reported value.
MARKERS = {
    TrialState.COMPLETE: {"marker": "o", "label": "complete"},
    TrialState.PRUNED: {"marker": "x", "color": "gray", "label": "pruned (last reported)"},
}
MATPLOTLIB_MISSING = 'No plots of the study: they need matplotlib: pip install -e ".[plots]"'


def plot_study(study: optuna.Study, sweep_dir: str | Path, metric: str | None) -> list[str]:
    """The report's lines: each PNG written, or one line saying why a picture was not drawn (not an error: the
    sweep's trials are done and told whatever the pictures make of them)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [MATPLOTLIB_MISSING]
    sweep_dir = Path(sweep_dir)
    lines = []
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if any(trial_value(trial) is not None for trial in trials):
        lines.append(f"Written: {save(metric_figure(study, metric), sweep_dir / METRIC_PNG)}")
    else:
        lines.append("No metric plot: no trial of the study has a value yet")
    importances = param_importances(study)
    if isinstance(importances, str):
        lines.append(f"No parameter-importance plot: {importances}")
    else:
        lines.append(f"Written: {save(importance_figure(importances, metric), sweep_dir / IMPORTANCE_PNG)}")
    return lines


def trial_value(trial: FrozenTrial) -> float | None:
    """A complete trial's value; a pruned trial's last reported value (Optuna keeps it as the value when it has one)."""
    if trial.value is not None or trial.last_step is None:
        return trial.value
    return trial.intermediate_values[trial.last_step]


def param_importances(study: optuna.Study) -> dict[str, float] | str:
    """Each parameter's share of what decides the metric over the complete trials, most important first; or why
    there is none to show."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"{len(complete)} complete trial{'s' * (len(complete) != 1)}, it needs 2 or more"
    params = {name for trial in complete for name in trial.params}
    if len(params) < 2:
        return f"one parameter searched ({', '.join(sorted(params)) or 'none'}), nothing to compare it with"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.importance.get_param_importances(study, evaluator=importance_evaluator()[0])
    except (ValueError, RuntimeError) as error:  # e.g. parameters that no two complete trials share
        return str(error).strip().splitlines()[0]


def importance_evaluator() -> tuple[BaseImportanceEvaluator, str]:
    """fANOVA (Optuna's default, seeded so a report repeats itself) needs scikit-learn, which no extra installs;
    without it PED-ANOVA, which needs numpy only. With its name, for the plot's label."""
    if importlib.util.find_spec("sklearn") is not None:
        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def metric_figure(study: optuna.Study, metric: str | None) -> "Figure":
    """x: trial number, y: its value; pruned trials as crosses at their last reported value, the best as a star, and
    the best value so far as a step line."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(6.4, 4.0)
    ax = figure.add_subplot()
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for state, style in MARKERS.items():
        points = [(trial.number, trial_value(trial)) for trial in finished if trial.state == state]
        points = [(number, value) for number, value in points if value is not None]
        if points:
            ax.plot(*zip(*points, strict=True), linestyle="none", **style)
    complete = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    if complete:
        better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        running = list(accumulate((trial.value for trial in complete), better))
        ax.step([trial.number for trial in complete], running, where="post", alpha=0.5, label="best so far")
        best = study.best_trial
        ax.plot(best.number, best.value, marker="*", markersize=14, color="red", linestyle="none",
                label=f"best: trial {best.number}")  # fmt: skip
    name = metric or "value"
    ax.set(xlabel="trial", ylabel=name, title=f"{study.study_name}: {name} ({study.direction.name.lower()})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def importance_figure(importances: dict[str, float], metric: str | None) -> "Figure":
    """One horizontal bar per parameter, the most important on top."""
    names = list(importances)[::-1]
    figure = _figure(6.4, 1.2 + 0.4 * len(names))
    ax = figure.add_subplot()
    ax.barh(names, [importances[name] for name in names])
    xlabel = f"importance for {metric or 'the value'} ({importance_evaluator()[1]})"
    ax.set(xlabel=xlabel, xlim=(0, 1), title="Parameter importance")
    ax.grid(axis="x", alpha=0.3)
    return figure


def save(figure: "Figure", path: Path) -> Path:
    """The PNG written whole or not at all: a report read while the sweep ends never sees half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return path
