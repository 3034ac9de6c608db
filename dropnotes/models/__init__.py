"""Models used by the chapters, each readable in one screen."""

from dropnotes.models.mlp import MLP
from dropnotes.models.vit import ViT

__all__ = ["MLP", "ViT"]
