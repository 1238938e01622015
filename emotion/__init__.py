"""Explainable facial-emotion recognition: faces in, labels, probabilities and Grad-CAM heatmaps out."""
from emotion.model import CLASSES, EmotionModel, ModelLoadError, load_model

__all__ = ["CLASSES", "EmotionModel", "ModelLoadError", "load_model"]
