"""Chapter 5, "Dropout in language-model pretraining versus fine-tuning".

A byte-level GPT (:class:`dropnotes.models.GPT`) is pretrained for one epoch (every window of the
corpus seen at most once) with dropout 0, 0.1 and early dropout, then the dropout-0 checkpoint is
fine-tuned for many epochs on a slice of tiny-shakespeare with dropout 0 / 0.1 / 0.2, with LoRA
(``lora_dropout`` 0 / 0.1), and on growing slices to find where dropout stops helping.
Pretrained checkpoints are cached by configuration (:func:`dropnotes.results.checkpoint_dir`), so
a rerun with other fine-tuning parameters does not pretrain again.

The chapter is a package, one concern a file: :mod:`.config` (the protocol, profiles, knobs and ``configure``),
:mod:`.train` (the runs and :func:`run`), :mod:`.rules` (the verdicts), :mod:`.figures` (plots and the page's
facts); its cost-model groups are in :mod:`dropnotes.experiments.costs.llm`. Every name is re-exported here, so
``llm.X`` reaches any of them.
"""

from dropnotes.experiments.llm.config import (
                                              ARMS,
                                              CHAPTER,
                                              CORPORA,
                                              KNOBS,
                                              LN2,
                                              PAPER_SETTINGS,
                                              PEAK_FLOPS,
                                              PROFILE_DEFAULTS,
                                              PROTOCOL,
                                              PROTOCOL_CHANGES,
                                              LLMConfig,
                                              _model,
                                              _optimizer,
                                              _set_p,
                                              configure,
                                              early_evals,
                                              first_eval,
                                              full_runs,
                                              measured_setting,
                                              pretrain_lrs,
)
from dropnotes.experiments.llm.figures import (
                                              SCALE_AXIS,
                                              _first_seed,
                                              plot_finetuning,
                                              plot_pretraining,
                                              scale_points,
                                              stored_facts,
                                              stored_full,
)
from dropnotes.experiments.llm.rules import (
                                              CLAIMS,
                                              EARLY_MARGIN_BPB,
                                              FT_DELTA_BPB,
                                              NO_WINDOWS,
                                              _bpb_windows,
                                              _finetune_row,
                                              _gated,
                                              _mean_bpb,
                                              _not_judged,
                                              _numbers,
                                              _sel,
                                              _tables,
                                              arm_plateau,
                                              rejudge,
                                              rule_crossing,
                                              rule_resolved,
                                              verdicts,
                                              window_table,
)
from dropnotes.experiments.llm.train import (
                                              _best_and_final,
                                              _cosine,
                                              _group_runs,
                                              _judged_row,
                                              _key,
                                              _label,
                                              _pretrain_group,
                                              _start_bpb,
                                              finetune,
                                              finetune_group,
                                              mfu,
                                              precision_check,
                                              pretrain,
                                              pretrain_steps,
                                              run,
                                              select_finetune_lr,
                                              split_windows,
                                              train_run,
                                              train_speed,
)

__all__ = ["ARMS", "CHAPTER", "CLAIMS", "CORPORA", "EARLY_MARGIN_BPB", "FT_DELTA_BPB", "KNOBS", "LLMConfig", "LN2",
           "NO_WINDOWS", "PAPER_SETTINGS", "PEAK_FLOPS", "PROFILE_DEFAULTS", "PROTOCOL", "PROTOCOL_CHANGES",
           "SCALE_AXIS", "_best_and_final", "_bpb_windows", "_cosine", "_finetune_row", "_first_seed", "_gated",
           "_group_runs", "_judged_row", "_key", "_label", "_mean_bpb", "_model", "_not_judged",
           "_numbers", "_optimizer", "_pretrain_group", "_sel", "_set_p", "_start_bpb",
           "_tables", "arm_plateau", "configure",
           "early_evals", "finetune", "finetune_group", "first_eval", "full_runs", "gpt_step_fn",
           "measured_setting", "mfu", "plot_finetuning", "plot_pretraining", "precision_check", "pretrain",
           "pretrain_lrs", "pretrain_steps", "rejudge", "rule_crossing", "rule_resolved", "run", "scale_points",
           "select_finetune_lr", "split_windows", "stored_facts", "stored_full", "timed_steps",
           "train_run", "train_speed", "verdicts", "window_table"]
