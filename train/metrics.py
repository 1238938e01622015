"""Classification scores shared by training, evaluation and the audit."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from emotion.faithfulness import wilson
from emotion.model import CLASSES

NO_ANSWER = -1  # a prediction that is none of the classes: no face found, file unreadable, or a class we do not score
NO_ANSWER_NAME = "no answer"  # the confusion matrix's extra last column


def class_indices(model_labels) -> list[int]:
    """Our class index (CLASSES order) for each of a model's output labels, by name; NO_ANSWER for a label
    that is none of our classes (e.g. contempt). A Hub model may list the classes in another order."""
    from train.data import class_index

    return [NO_ANSWER if (i := class_index(name)) is None else i for name in model_labels]


def scores(y_true, y_pred, classes=CLASSES) -> dict:
    """accuracy with its 95% Wilson interval, mean-class accuracy (mean of per-class recall), per-class
    accuracy, confusion matrix, n.

    A prediction of NO_ANSWER (-1) counts as wrong everywhere: the confusion matrix has one row per
    class and one column per class plus a last "no answer" column, so every row sums to that class's
    number of images. Classes absent from y_true get per-class accuracy None and are left out of the mean.
    """
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    k = len(classes)
    if ((y_pred < NO_ANSWER) | (y_pred >= k)).any() or ((y_true < 0) | (y_true >= k)).any():
        raise ValueError(f"class indices must lie in 0..{k - 1} (predictions may also be {NO_ANSWER}: no answer)")
    cm = (confusion_matrix(y_true, y_pred, labels=list(range(k)) + [NO_ANSWER])[:k]  # no true "no answer" row
          if len(y_true) else np.zeros((k, k + 1), int))
    support = cm.sum(1)
    per_class = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "accuracy_ci95": list(wilson(int(np.sum(y_true == y_pred)), len(y_true))),
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "confusion_columns": [*classes, NO_ANSWER_NAME],
        "n": int(len(y_true)),
    }
