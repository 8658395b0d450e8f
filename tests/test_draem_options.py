"""`WeakDraem`'s learning rate: anomalib's schedule at the rate asked for."""

from __future__ import annotations

import pytest

pytest.importorskip("anomalib")

from anogen_aug.integrations.anomalib import WeakDraem  # noqa: E402


def test_learning_rate_reaches_adam_and_keeps_anomalibs_schedule():
    small = {"reconstruction_width": 8, "discrimination_width": 8}
    (default,), _ = WeakDraem(**small).configure_optimizers()
    (optimizer,), (scheduler,) = WeakDraem(learning_rate=1e-3, **small).configure_optimizers()
    assert default.param_groups[0]["lr"] == 1e-4  # anomalib's and the authors'
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert sorted(scheduler.milestones) == [400, 600] and scheduler.gamma == 0.1
    with pytest.raises(ValueError, match="learning_rate"):
        WeakDraem(learning_rate=0.0, **small)
