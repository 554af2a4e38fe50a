"""What a run leaves on disk and how the next command finds it: the run dir and its guard (`guard`), checkpoints
written whole and resume (`checkpoints`; in the background with `async_checkpoint`), the task a checkpoint was trained
on (`trained`), outputs that are never overwritten (`outputs`), and the records of what ran: the saved config and the
provenance (`provenance`)."""
