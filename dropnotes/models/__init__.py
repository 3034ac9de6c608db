"""Models used by the chapters, each readable in one screen."""

from dropnotes.models.cnn import SmallCNN
from dropnotes.models.gpt import GPT
from dropnotes.models.lstm_lm import LSTMLM
from dropnotes.models.mlp import MLP, SparseMLP
from dropnotes.models.vit import ViT

__all__ = ["GPT", "LSTMLM", "MLP", "SmallCNN", "SparseMLP", "ViT"]
