"""The machinery: what every task shares and a project never edits. Yours to change are your package's `models/`
and `data/` and their configs in `conf/model/`, `conf/data/`, `conf/experiment/` (README "Add a task").

The training path: `train.py` -> `cli.train_main` (Hydra, one-line errors) -> `train.train` (build, fit, test) ->
your LightningModule's `training_step`. One module per concern:

- `cli`, `helptext`: the entry points; `--help` and config errors without importing torch
- `validation`: every check of what a user typed (switches, trainer, data keys, each `_target_`'s arguments, devices)
- `build`: data module, callbacks, loggers, strategy and Trainer from the config
- `runs/`: run dirs (naming, the lock, refusing the wrong dir), checkpoints and resume, outputs, the saved config
- `console`: what a run prints (its log lines, the config tree, the final table)
- `torch_settings`, `loggers`, `resolvers`, `errors`, `refused`, `hydra_mode`; `callbacks/`, `strategies/`, `sweeps/`
- `train`, `evaluate`, `predict`, `export`: the four commands, each readable top to bottom
"""
