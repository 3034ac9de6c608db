"""Models used by the chapters, each readable in one screen."""

from dropnotes.models.mlp import MLP

__all__ = ["MLP"]
