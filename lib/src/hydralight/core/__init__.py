"""The machinery: what every task shares and a project never edits. Yours to change are your package's `models/`
and `data/` and their configs in `conf/model/`, `conf/data/`, `conf/experiment/` (README "Add a task").

The training path: `train.py` -> `cli.train_main` (Hydra, one-line errors) -> `train.train` (build, fit, test) ->
your LightningModule's `training_step`. One module per concern:

- `cli`, `helptext`: the entry points; `--help` and config errors without importing torch
- `validation`: every check of what a user typed (switches, trainer, data keys, each `_target_`'s arguments, devices);
  `switch_checks`: the checks only some switches and commands need (checkpoints given, predict's inputs, ...)
- `build`: data module, callbacks, loggers, strategy and Trainer from the config, and the torch settings it asks for
- `runs/`: run dirs (naming, the lock, refusing the wrong dir), checkpoints and resume, outputs, the saved config
- `console`: what a run prints (its log lines, the config tree, the final table)
- `loggers`, `resolvers` (and the multirun-only Hydra callbacks), `errors`, `refused`; `callbacks/`, `strategies/`,
  `sweeps/`
- `train`, `evaluate`, `predict`, `export`: the four commands, each readable top to bottom
"""
