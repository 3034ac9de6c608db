"""Chapter 2, "Dropout as an ensemble": weight scaling versus Monte-Carlo averaging, dropout versus an
explicit ensemble, and MC-dropout uncertainty (regression gap, rotated digit, out-of-distribution).

Per seed, the chapter trains K plain MLPs in one vectorised pass (they are both the "single net"
baseline and the explicit ensemble) and one dropout MLP that differs from them in its dropout rates only (the same
learning rate, momentum, schedule and epoch selection; no max-norm). Everything else is evaluation. Every model's
learning curve and its per-example mistakes on the test set are stored with the record (tables ``curves`` and
``wrong``).

The chapter is a package, one concern a file: :mod:`.config` (the protocol, margins, profiles, knobs and
``configure``), :mod:`.train` (the batched group and :func:`run`), :mod:`.evaluate` (the measurements on trained
nets), :mod:`.rules` (the verdicts and :func:`merge_blocks`) and :mod:`.figures`; its cost-model groups are in
:mod:`dropnotes.experiments.costs.ensembles`. Every name is re-exported here, so ``ensembles.X`` reaches any of them.
"""

from dropnotes.experiments.ensembles.config import (CHAPTER, PROTOCOL, PROTOCOL_CHANGES, EQUAL_MARGIN_PP, REJUDGE_FROM,
                                                    DELTA_PP, OOD_THRESHOLD, N_BOOT, ROTATION_SAMPLES, ROTATION_ANGLES,
                                                    PAPER_SETTINGS, measured_setting, PAPER_T2, PAPER_UB_NLL,
                                                    PAPER_UB_ECE, EnsemblesConfig, PROFILE_DEFAULTS, KNOBS, configure,
                                                    DROPOUT_NET, PLATEAU_GATE)
from dropnotes.experiments.ensembles.evaluate import (rotate, _prepare, _logits_eval, _entropy, _scores, _example_nll,
                                                      evaluate_seed, rotation_test, rotated_digit, regression_gap)
from dropnotes.experiments.ensembles.rules import (summarize_quality, summarize_sweep, summarize_ood, rule_level,
                                                   rule_mc_matches, ordering_tests, rule_ordering, rule_regression,
                                                   rule_rotation, rule_ood, _arm_plateau, _test_mistakes, verdicts,
                                                   SEED_TESTED, _one_seed, _decided, rejudge, _judge_tables,
                                                   merge_blocks)
from dropnotes.experiments.ensembles.train import (_plain, stacked_group, arms, train_all, curves, train_speed, run,
                                                   packed_mistakes, packed_nll)
from dropnotes.experiments.ensembles.figures import (plot_mc_curve, plot_reliability, plot_rotation, plot_regression,
                                                     SCALE_AXIS, PAPER_POINTS, PAPER_POINTS_LABEL, scale_points,
                                                     stored_full)

__all__ = ["CHAPTER", "DELTA_PP", "DROPOUT_NET", "EQUAL_MARGIN_PP", "EnsemblesConfig", "KNOBS", "N_BOOT", "PLATEAU_GATE",
           "packed_nll",
           "OOD_THRESHOLD", "PAPER_POINTS", "PAPER_POINTS_LABEL", "PAPER_SETTINGS", "PAPER_T2", "PAPER_UB_ECE",
           "PAPER_UB_NLL", "PROFILE_DEFAULTS", "PROTOCOL", "PROTOCOL_CHANGES", "REJUDGE_FROM", "ROTATION_ANGLES",
           "ROTATION_SAMPLES", "SCALE_AXIS", "SEED_TESTED", "_arm_plateau", "_decided", "_entropy", "_example_nll",
           "_judge_tables", "_logits_eval", "_one_seed", "_plain", "_prepare", "_scores", "_test_mistakes", "arms",
           "configure", "curves", "evaluate_seed", "measured_setting", "merge_blocks", "ordering_tests",
           "packed_mistakes", "plot_mc_curve", "plot_regression", "plot_reliability", "plot_rotation",
           "regression_gap", "rejudge", "rotate", "rotated_digit", "rotation_test", "rule_level", "rule_mc_matches",
           "rule_ood", "rule_ordering", "rule_regression", "rule_rotation", "run", "scale_points", "stacked_group",
           "stored_full", "summarize_ood", "summarize_quality", "summarize_sweep", "train_all", "train_speed",
           "verdicts"]
