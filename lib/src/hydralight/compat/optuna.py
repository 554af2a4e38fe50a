"""Optuna's surface that moved between the versions the sweeps extra allows (optuna >= 4.5; tested: 4.5 and 5.1,
`lib/tests/test_optuna.py`). Only public names: what changed is which of them exists."""

import inspect
from typing import Any

from optuna.storages import RDBStorage

__all__ = ["retry_stale_trials"]


def retry_stale_trials(max_retry: int) -> dict[str, Any]:
    """RDBStorage's keyword for "re-queue a trial whose worker stopped beating, up to `max_retry` times": 4.9 renamed
    `failed_trial_callback` / RetryFailedTrialCallback to `heartbeat_stale_trial_callback` /
    RetryHeartbeatStaleTrialCallback (the old names warn, and go in 6.0)."""
    if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage.__init__).parameters:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        return {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry)}
    from optuna.storages import RetryFailedTrialCallback

    return {"failed_trial_callback": RetryFailedTrialCallback(max_retry=max_retry)}
