"""Classification scores shared by training, evaluation and the audit."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from emotion.model import CLASSES


def scores(y_true, y_pred, classes=CLASSES) -> dict:
    """accuracy, mean-class accuracy (mean of per-class recall), per-class accuracy, confusion matrix, n.

    Classes absent from y_true get per-class accuracy None and are left out of the mean.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    support = cm.sum(1)
    per_class = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "n": int(len(y_true)),
    }
