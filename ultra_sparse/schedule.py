"""Epoch -> target sparsity: one-shot, or the gradual cubic ramp of Zhu & Gupta (2017).

The schedule copies the shape of ``torch.optim.lr_scheduler``: :meth:`SparsitySchedule.step` is called once at the end
of every epoch and returns the sparsity the model should have from then on; ``state_dict`` / ``load_state_dict``
round-trip its position so a resumed run continues where it stopped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SparsitySchedule", "cubic_sparsity", "default_window"]


def cubic_sparsity(t: int, initial: float, final: float, start: int, end: int) -> float:
    """Sparsity after ``t`` completed epochs on the cubic ramp from ``initial`` to ``final``.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3`` for ``t0 <= t <= t1``; ``s_i`` before ``t0`` and
    ``s_f`` from ``t1`` on. The ramp prunes fast while many redundant weights remain and slowly near the end.

    Args:
        t (int): Completed epochs.
        initial (float): Sparsity at the start of the ramp (``s_i``).
        final (float): Sparsity at the end of the ramp (``s_f``).
        start (int): Epoch count ``t0`` where the ramp starts.
        end (int): Epoch count ``t1`` where it reaches ``final``.

    Returns:
        (float): The target sparsity.

    Examples:
        >>> cubic_sparsity(1, 0.0, 0.5, 0, 2)
        0.4375
        >>> cubic_sparsity(5, 0.0, 0.5, 0, 2)
        0.5
        >>> cubic_sparsity(1, 0.0, 0.5, 3, 3)  # an empty ramp prunes at its end, not before
        0.0
    """
    if t >= end:
        return final
    if t <= start:
        return initial
    return final + (initial - final) * (1.0 - (t - start) / (end - start)) ** 3


def default_window(epochs: int) -> tuple[int, int]:
    """Default ``(prune_start, prune_end)`` for a run of ``epochs``: ramp over the first two thirds, recover after.

    Examples:
        >>> default_window(100)
        (0, 66)
        >>> default_window(1)
        (0, 1)
    """
    return 0, max(1, (2 * epochs) // 3)


class SparsitySchedule:
    """Target sparsity per epoch, stepped at every epoch end.

    Args:
        final (float): Sparsity to reach (``s_f``).
        initial (float): Sparsity already present when training starts (``s_i``).
        kind (str): ``oneshot`` (``final`` from the start) or ``gradual`` (cubic ramp).
        start (int): ``prune_start``: completed epochs before the ramp starts.
        end (int): ``prune_end``: completed epochs at which the ramp reaches ``final``.
        freq (int): Prune every ``freq`` epochs inside the ramp (and always at ``end``).

    Attributes:
        last_epoch (int): Completed epochs the schedule has been stepped through (0 before the first step).

    Examples:
        >>> sched = SparsitySchedule(0.5, kind="gradual", start=0, end=2)
        >>> sched.target()
        0.0
        >>> [sched.step() for _ in range(3)]
        [0.4375, 0.5, 0.5]
        >>> sched.state_dict()["last_epoch"]
        3
    """

    def __init__(
        self, final: float, initial: float = 0.0, kind: str = "gradual", start: int = 0, end: int = 1, freq: int = 1
    ):
        """Validate and store the ramp; raise TypeError/ValueError naming a bad value."""
        if kind not in ("oneshot", "gradual"):
            raise ValueError(f"schedule={kind!r} is not one of oneshot, gradual")
        for key, value in (("final", final), ("initial", initial)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{key} sparsity {value!r} must be a number in [0, 1)")
        for key, value, low in (("prune_start", start, 0), ("prune_end", end, 0), ("prune_freq", freq, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{key}={value!r} must be an integer")
            if value < low:
                raise ValueError(f"{key}={value!r} must be >= {low}")
        if end < start:
            raise ValueError(f"prune_end={end} must not come before prune_start={start}")
        self.final, self.initial, self.kind = float(final), float(min(initial, final)), kind
        self.start, self.end, self.freq = start, end, freq
        self.last_epoch = 0

    def target(self, t: int | None = None) -> float:
        """Target sparsity after ``t`` completed epochs (default: the current position)."""
        t = self.last_epoch if t is None else t
        if self.kind == "oneshot":
            return self.final
        if self.start < t < self.end and (t - self.start) % self.freq:
            t = t - (t - self.start) % self.freq  # between pruning steps the last step's target holds
        return cubic_sparsity(t, self.initial, self.final, self.start, self.end)

    def at(self, t: float) -> float:
        """Target after ``t`` epochs, ``t`` fractional: the ramp followed batch by batch (``method=channel``).

        Examples:
            >>> SparsitySchedule(0.5, kind="gradual", start=0, end=2).at(1.5)
            0.4921875
        """
        if self.kind == "oneshot":
            return self.final
        return cubic_sparsity(t, self.initial, self.final, self.start, self.end)

    def step(self) -> float:
        """Advance one epoch and return the new target."""
        self.last_epoch += 1
        return self.target()

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (what checkpoints store)."""
        keys = ("final", "initial", "kind", "start", "end", "freq", "last_epoch")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        restored = SparsitySchedule(
            state["final"], state["initial"], state["kind"], state["start"], state["end"], state["freq"]
        )
        self.__dict__.update(restored.__dict__, last_epoch=int(state["last_epoch"]))
