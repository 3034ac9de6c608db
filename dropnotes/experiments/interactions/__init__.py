"""Chapter 6, "Dropout's interactions": batch norm (variance shift), noise shape in CNNs, DropConnect,
Gaussian dropout, max-norm and weight decay.

Part A trains :class:`dropnotes.models.SmallCNN` on Fashion-MNIST with dropout placed before batch norm,
after the last batch norm, or nowhere, and with per-pixel against channel-wise (spatial) noise. Part B
trains fully connected nets on MNIST with each noise on the hidden units or weights, max-norm (one factor: the
dropout net with and without it, at the same learning rate), and a dropout x weight-decay grid. Each part's arms x
seeds train as one batched group (:class:`dropnotes.stacked.StackedCNN`, :class:`dropnotes.stacked.StackedMLP`);
each model's epoch is chosen on a validation split held out of the training set, and the test set is used once, at
the end. Every model's learning curve and its per-example test mistakes are stored with the record (tables
``curves`` and ``wrong``); a net that diverged or stayed near chance (:func:`trained_below`) is never evidence.

The chapter is a package, one concern a file: :mod:`.config` (the protocol, margins, profiles, knobs and
``configure``), :mod:`.train` (the batched groups and :func:`run`), :mod:`.rules` (the verdicts and :func:`merge_blocks`)
and :mod:`.figures`; its cost-model groups are in :mod:`dropnotes.experiments.costs.interactions`. Every name is
re-exported here, so ``interactions.X`` reaches any of them.
"""

from dropnotes.experiments.interactions.config import (CHAPTER, PROTOCOL, PROTOCOL_CHANGES, CHANCE_ERROR,
                                                       NEARER_CHANCE, EQUAL_MARGIN, DELTA, REJUDGE_FROM, PAPER_TABLE10,
                                                       PAPER_TABLE2_MAXNORM, LI_DENSENET, PAPER_SETTINGS, TRAIN_IMAGES,
                                                       CNN_ARMS, InteractionsConfig, PROFILE_DEFAULTS, KNOBS,
                                                       configure, measured_setting)
from dropnotes.experiments.interactions.train import (variance_shift_check, _split, bn_shift, reestimate_bn, _fit,
                                                      cnn_arms, cnn_group, run_cnns, mlp, mlp_arms, mlp_label,
                                                      mlp_group, run_mlps, packed_mistakes, run, mlp_speed)
from dropnotes.experiments.interactions.rules import (curves, merge_blocks, grid, _select, _err, trained_below,
                                                      untrained, not_trained, CLAIMS, _arm_plateau, _row, verdicts,
                                                      _trained_gate, rejudge)
from dropnotes.experiments.interactions.figures import (plot_grid, SCALE_AXIS, scale_points, stored_full, stored_facts)


__all__ = ["CHANCE_ERROR", "CHAPTER", "CLAIMS", "CNN_ARMS", "DELTA", "EQUAL_MARGIN", "InteractionsConfig", "KNOBS",
           "LI_DENSENET", "NEARER_CHANCE", "PAPER_SETTINGS", "PAPER_TABLE10", "PAPER_TABLE2_MAXNORM",
           "PROFILE_DEFAULTS", "PROTOCOL", "PROTOCOL_CHANGES", "REJUDGE_FROM", "SCALE_AXIS", "TRAIN_IMAGES",
           "_arm_plateau", "_err", "_fit", "_row", "_select", "_split", "_trained_gate", "bn_shift", "cnn_arms",
           "cnn_group", "configure", "curves", "grid", "measured_setting", "merge_blocks", "mlp", "mlp_arms",
           "mlp_group", "mlp_label", "mlp_speed", "not_trained", "packed_mistakes", "plot_grid", "reestimate_bn",
           "rejudge", "run", "run_cnns", "run_mlps", "scale_points", "stored_facts", "stored_full", "trained_below",
           "untrained", "variance_shift_check", "verdicts"]
