"""The decision rule: how the network's scores become the probabilities and the label the app shows.

A classifier trained on FER+ learns FER+'s class balance with the faces: neutral and happy make up 62% of its
training votes, disgust under 1%, so whenever a face is in doubt the plain reading ("prior") answers neutral
or happy. The balanced reading divides that training prior out (logit adjustment: each class's logit minus
`tau` x log of its training share), which answers as if every emotion were equally likely before the face is
seen. Which one a model folder uses is written in its `config.json`:

    "decision": {"rule": "balanced", "tau": 1.0, "prior": {"angry": 0.095, ...}}

With the balanced rule, `EmotionModel` folds the shift into the classifier's bias when it loads, so every
path (photos, webcam, API, heatmaps, evaluation) reads the same probabilities and explains the same class;
the file on disk keeps the network's own scores, so plain timm users get the prior reading.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RULES = ("prior", "balanced")
DESCRIPTIONS = {
    "prior": "the probabilities carry the training data's class balance",
    "balanced": "every emotion equally likely before the face is seen (the training class balance divided out)",
}


@dataclass(frozen=True)
class Decision:
    rule: str = "prior"
    tau: float = 1.0  # how much of the log prior is taken out (1: all of it)
    prior: dict[str, float] = field(default_factory=dict)  # each class's share of the training targets

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Unknown decision rule {self.rule!r}; choose from {', '.join(RULES)}.")
        if self.rule == "balanced" and not self.prior:
            raise ValueError("The balanced rule needs the class prior the model was trained under.")

    @classmethod
    def from_config(cls, config: dict) -> "Decision":
        d = config.get("decision") or {}
        return cls(rule=d.get("rule", "prior"), tau=float(d.get("tau", 1.0)),
                   prior={k: float(v) for k, v in (d.get("prior") or {}).items()})

    def to_config(self) -> dict:
        return {"rule": self.rule, "tau": self.tau, "prior": {k: round(v, 6) for k, v in self.prior.items()}}

    def log_prior(self, labels) -> np.ndarray:
        """tau x log(prior) in `labels` order (zeros when the prior is unknown)."""
        if not self.prior:
            return np.zeros(len(labels), np.float32)
        missing = [c for c in labels if c not in self.prior]
        if missing:
            raise ValueError(f"The class prior has no share for {', '.join(missing)}.")
        p = np.array([self.prior[c] for c in labels], np.float64)
        return (self.tau * np.log(np.clip(p / p.sum(), 1e-6, None))).astype(np.float32)

    def logit_offset(self, labels) -> np.ndarray:
        """What this rule adds to the network's logits (in `labels` order)."""
        return -self.log_prior(labels) if self.rule == "balanced" else np.zeros(len(labels), np.float32)

    def describe(self) -> str:
        text = DESCRIPTIONS[self.rule]
        if self.rule == "balanced" and self.tau != 1:  # part of the prior: say how much
            text = text[:-1] + f" at tau {self.tau:g})"
        return text


def reread(probs: np.ndarray, labels, start: Decision, rule: str, tau: float | None = None) -> np.ndarray:
    """Probabilities read under `start` (rows of N x C, `labels` order) as another rule would read them."""
    target = Decision(rule=rule, tau=start.tau if tau is None else tau, prior=start.prior)
    shift = target.logit_offset(labels) - start.logit_offset(labels)
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) + shift
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def training_prior(targets, labels) -> dict[str, float]:
    """Each class's share of the training targets (N x C vote distributions or one-hot rows)."""
    t = np.asarray(targets, np.float64)
    share = t.sum(0) / t.sum()
    return {c: float(v) for c, v in zip(labels, share)}
