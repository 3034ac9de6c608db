"""Chapter 3, "Variational dropout": dropout in recurrent networks on Penn Treebank, and learned rates.

Part 1 trains the word-level LSTM language model (:class:`dropnotes.models.LSTMLM`) with each
dropout scheme, keeps the epoch of lowest validation perplexity (early stopping), and reports its
test perplexity with weight scaling and, for the variational model, with MC averaging. Part 2
trains a LeNet-300-100 of sparse variational layers (:class:`dropnotes.models.SparseMLP`) on MNIST.

The chapter is a package, one concern a file: :mod:`.config` (the protocol, margins, profiles, knobs and
``configure``), :mod:`.train` (the pilot, the batched groups and :func:`run`), :mod:`.rules` (the verdicts and
:func:`merge_blocks`) and :mod:`.figures`; its cost-model groups are in :mod:`dropnotes.experiments.costs.variational`.
Every name is re-exported here, so ``variational.X`` reaches any of them.
"""

from dropnotes.experiments.variational.config import (CHAPTER, PROTOCOL, PROTOCOL_CHANGES, PAPER_ZAREMBA_MEDIUM,
                                                      PAPER_VARIATIONAL_MEDIUM, PAPER_VARIATIONAL_MEDIUM_MC,
                                                      PAPER_ZAREMBA_SMALL_NOREG, PAPER_ZAREMBA_WPS, PAPER_AWD,
                                                      PAPER_SVD_ERROR, PAPER_SVD_COMPRESSION, EQUAL_MARGIN_NATS,
                                                      DELTA_NATS, PAPER_SETTINGS, measured_setting, VariationalConfig,
                                                      PROFILE_DEFAULTS, KNOBS, configure, PLATEAU_GATE, SCHEDULES)
from dropnotes.experiments.variational.train import (_lm_data, PILOT_SEED, select_lr, train_lms, scheme_speed,
                                                     MC_CHUNK, mc_versus_scaling, svd_schedules, train_sparse_vd, run)
from dropnotes.experiments.variational.rules import (merge_blocks, summarize, _ppl, LADDER, lm_plateau, _per_window,
                                                     verdicts, rejudge)
from dropnotes.experiments.variational.figures import (plot_curves, plot_sparsity, SCALE_AXIS, PAPER_POINTS,
                                                       PAPER_POINTS_LABEL, PAPER_PANEL, SCALE_PANEL_TITLE, scale_panel,
                                                       scale_points, stored_full, stored_facts)


__all__ = ["CHAPTER", "DELTA_NATS", "EQUAL_MARGIN_NATS", "KNOBS", "LADDER", "MC_CHUNK", "PAPER_AWD", "PAPER_PANEL",
           "PAPER_POINTS", "PAPER_POINTS_LABEL", "PAPER_SETTINGS", "PAPER_SVD_COMPRESSION", "PAPER_SVD_ERROR",
           "PAPER_VARIATIONAL_MEDIUM", "PAPER_VARIATIONAL_MEDIUM_MC", "PAPER_ZAREMBA_MEDIUM",
           "PAPER_ZAREMBA_SMALL_NOREG", "PAPER_ZAREMBA_WPS", "PILOT_SEED", "PLATEAU_GATE", "PROFILE_DEFAULTS", "PROTOCOL",
           "PROTOCOL_CHANGES", "SCALE_AXIS", "SCHEDULES", "SCALE_PANEL_TITLE", "VariationalConfig", "_lm_data", "_per_window",
           "_ppl", "configure", "lm_plateau", "mc_versus_scaling", "measured_setting", "merge_blocks", "plot_curves",
           "plot_sparsity", "rejudge", "run", "scale_panel", "scale_points", "scheme_speed", "select_lr",
           "stored_facts", "stored_full", "summarize", "svd_schedules", "train_lms", "train_sparse_vd", "verdicts"]
