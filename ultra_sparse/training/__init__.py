"""Sparse training: the one start decision (:mod:`.start`), the trainer mixin and the task trainers (:mod:`.trainer`),
plain callbacks (:mod:`.callbacks`) and the helpers the trainer calls: checks before a run (:mod:`.preflight`), atomic
checkpoint writes (:mod:`.saving`), refits and calibration (:mod:`.refit`), new classes on a pruned network
(:mod:`.new_classes`). The mask states it drives are the methods' (:mod:`ultra_sparse.methods.state`).

The package imports nothing itself: import from its modules (``ultra_sparse.training.trainer`` and so on).
"""

__all__: list[str] = []
