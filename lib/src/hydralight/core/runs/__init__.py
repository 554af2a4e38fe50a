"""What a run leaves on disk and how the next command finds it: the run dir and its guard (`guard`), checkpoints and
resume (`checkpoints`), outputs that are never overwritten (`outputs`), and the saved config (`saved_config`)."""
