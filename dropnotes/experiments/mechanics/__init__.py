"""Chapter 1, "Dropout, mechanically": the mask, the two scalings, gradients, and an MNIST MLP sweep.

The chapter notebook calls :func:`configure` with its parameters (which validates them and fills
in the profile's defaults), then the demonstrations and :func:`run_mnist_sweep`, then
:func:`verdicts`. Everything it shows is computed here.

The chapter is a package, one concern a file: :mod:`.config` (the protocol, margins, profiles, knobs and
``configure``), :mod:`.demos` (the worked examples), :mod:`.train` (the batched sweep and :func:`run`), :mod:`.rules`
(the verdicts and :func:`merge_blocks`) and :mod:`.figures`; its cost-model groups are in
:mod:`dropnotes.experiments.costs.mechanics`. Every name is re-exported here, so ``mechanics.X`` reaches any of them.
"""

from dropnotes.experiments.mechanics.config import (CHAPTER, PROTOCOL, PROTOCOL_CHANGES, REJUDGE_FROM,
                                                    PAPER_NO_DROPOUT, PAPER_DROPOUT_RELU, PAPER_UPDATES,
                                                    PAPER_SETTINGS, REFERENCE_EFFECT_PP, DELTA_PP, LEVEL_MARGIN_PP,
                                                    measured_setting, MechanicsConfig, PROFILE_DEFAULTS, MNIST_TRAIN,
                                                    KNOBS, configure, train_flops, speed)
from dropnotes.experiments.mechanics.demos import (mask_demo, scaling_table, gradient_demo)
from dropnotes.experiments.mechanics.train import (_load, stacked_group, arms, run_mnist_sweep, run)
from dropnotes.experiments.mechanics.rules import (summarize, arm_plateau, _testable, _wrong, _missing, verdicts,
                                                   rejudge, merge_blocks, plateaus, curve_noise, rule_power)
from dropnotes.experiments.mechanics.figures import (plot_curves, stored, evidence_text, cite_t, SCALE_AXIS,
                                                     PAPER_POINTS, PAPER_POINTS_LABEL, scale_points, stored_full)


__all__ = ["CHAPTER", "DELTA_PP", "KNOBS", "LEVEL_MARGIN_PP", "MNIST_TRAIN", "MechanicsConfig", "PAPER_DROPOUT_RELU",
           "PAPER_NO_DROPOUT", "PAPER_POINTS", "PAPER_POINTS_LABEL", "PAPER_SETTINGS", "PAPER_UPDATES",
           "PROFILE_DEFAULTS", "PROTOCOL", "PROTOCOL_CHANGES", "REFERENCE_EFFECT_PP", "REJUDGE_FROM", "SCALE_AXIS",
           "_load", "_missing", "_testable", "_wrong", "arm_plateau", "arms", "cite_t", "configure", "curve_noise",
           "evidence_text", "gradient_demo", "mask_demo", "measured_setting", "merge_blocks", "plateaus",
           "plot_curves", "rejudge", "rule_power", "run", "run_mnist_sweep", "scale_points", "scaling_table",
           "speed", "stacked_group", "stored", "stored_full", "summarize", "train_flops", "verdicts"]
