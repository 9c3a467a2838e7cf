"""Names of the accuracy a validation reports: one table from a readable row name to Ultralytics' ``results_dict`` key.

A plain-data module at the bottom of the import graph, so that comparisons, plots and scans read the same names
without importing each other.

Examples:
    >>> ACCURACY_KEYS["mask mAP50-95"]
    'metrics/mAP50-95(M)'
"""

from __future__ import annotations

__all__ = ["ACCURACY_KEYS"]

ACCURACY_KEYS = {  # accuracy row -> Ultralytics' results_dict key, in table order; a task shows the ones it reports
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "mask mAP50": "metrics/mAP50(M)",
    "mask mAP50-95": "metrics/mAP50-95(M)",
    "pose mAP50": "metrics/mAP50(P)",
    "pose mAP50-95": "metrics/mAP50-95(P)",
    "top-1 accuracy": "metrics/accuracy_top1",
    "top-5 accuracy": "metrics/accuracy_top5",
}
