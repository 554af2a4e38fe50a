"""What a run leaves on disk and how the next command finds it: the run dir and its guard (`guard`), checkpoints and
resume (`checkpoints`, written whole by `checkpoint_io`, in the background with `async_checkpoint`), the task a
checkpoint was trained on (`trained`), outputs that are never overwritten (`outputs`), and the saved config
(`saved_config`)."""
