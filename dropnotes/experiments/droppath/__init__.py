"""Chapter 4, "DropPath in Vision Transformers": the drop-path rate, its depth-wise schedule, depth, and cost.

A small ViT (:class:`dropnotes.models.ViT`) is trained from scratch on a subset of CIFAR-10 with
AdamW, a cosine schedule and light augmentation (random crop and flip, on the data's device). All
arms x seeds of one depth train together as one :class:`dropnotes.stacked.StackedViT` (each model its
own per-block rates, data order and augmentation; models of one seed share their initialisation).
A validation split, drawn from the training images outside the subset, chooses the best rate; the
test images are evaluated once, after the last epoch.

The chapter is a package, one concern a file: :mod:`.config` (the protocol, profiles, knobs and ``configure``),
:mod:`.budget` (its FLOPs and CPU hours), :mod:`.train` (the batched ViT groups and :func:`run`), :mod:`.rules` (the
verdicts) and :mod:`.figures`; its cost-model groups are in :mod:`dropnotes.experiments.costs.droppath`. Every name is
re-exported here, so ``droppath.X`` reaches any of them.
"""

from dropnotes.experiments.droppath.config import (CHAPTER, PROTOCOL, PROTOCOL_CHANGES, HUANG_CIFAR10, HUANG_EPOCH_S,
                                                   DEIT_DEFAULT_RATE, PAPER_SETTINGS, PLATEAU_GATE, LAPTOP_NEEDS_GPU,
                                                   measured_setting, DropPathConfig, PROFILE_DEFAULTS, KNOBS,
                                                   configure, TRAIN_IMAGES)
from dropnotes.experiments.droppath.budget import (vit_train_flops, train_flops, cpu_hours, laptop_sentence)
from dropnotes.experiments.droppath.train import (MEAN, STD, _prepare, augment, _crop, arms, train_group, EVAL_BATCH,
                                                  step_times, run)
from dropnotes.experiments.droppath.rules import (summarize, _sel, _errors, _wrong, CLAIMS, UNIT, _row, _decide,
                                                  verdicts, middle_rate, rejudge)
from dropnotes.experiments.droppath.figures import (plot_sweep, SCALE_AXIS, scale_points, stored_full)


__all__ = ["CHAPTER", "CLAIMS", "DEIT_DEFAULT_RATE", "DropPathConfig", "EVAL_BATCH", "HUANG_CIFAR10",
           "HUANG_EPOCH_S", "KNOBS", "LAPTOP_NEEDS_GPU", "MEAN", "PAPER_SETTINGS", "PLATEAU_GATE",
           "PROFILE_DEFAULTS", "PROTOCOL", "PROTOCOL_CHANGES", "SCALE_AXIS", "STD", "TRAIN_IMAGES", "UNIT", "_crop",
           "_decide", "_errors", "_prepare", "_row", "_sel", "_wrong", "arms", "augment", "configure", "cpu_hours",
           "laptop_sentence", "measured_setting", "middle_rate", "plot_sweep", "rejudge", "run", "scale_points",
           "step_times", "stored_full", "summarize", "train_flops", "train_group", "verdicts", "vit_train_flops"]
