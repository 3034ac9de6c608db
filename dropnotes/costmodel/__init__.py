"""The cost model below the chapters: what one training step costs, counted on PyTorch's ``meta`` device
(:mod:`~dropnotes.costmodel.counter`: FLOPs, kernels launched, bytes moved), the time model that turns a step's
counts into seconds on a GPU (:mod:`~dropnotes.costmodel.timemodel`: :class:`Group`, its constants), and the
batched engine's steps as the chapters build their groups from them (:mod:`~dropnotes.costmodel.steps`).

It names no chapter: every chapter declares its own groups (its ``groups(cfg)``, the chapter contract in
:mod:`dropnotes.experiments.contract`), and :mod:`dropnotes.estimate` loops over the registry of chapters.
"""

from dropnotes.costmodel.counter import Cost, KernelCounter, lm_cross_entropy, measure, meta_forward, meta_step
from dropnotes.costmodel.steps import (
                                       TimedStep,
                                       classifier_compare,
                                       dtype_of,
                                       engine_step,
                                       engine_step_fn,
                                       lm_compare,
                                       on,
                                       sequential_classifier_step,
                                       time_compare,
)
from dropnotes.costmodel.timemodel import (
                                       BANDWIDTH_FRACTION,
                                       DEFAULT_FRACTION,
                                       DEFAULT_LAUNCH_S,
                                       GRAPH_LAUNCH_FACTOR,
                                       PEAK_BANDWIDTH,
                                       PEAK_FLOPS,
                                       Group,
)

__all__ = ["BANDWIDTH_FRACTION", "Cost", "DEFAULT_FRACTION", "DEFAULT_LAUNCH_S", "GRAPH_LAUNCH_FACTOR", "Group",
           "KernelCounter", "PEAK_BANDWIDTH", "PEAK_FLOPS", "TimedStep", "classifier_compare", "dtype_of", "engine_step",
           "engine_step_fn", "lm_compare", "lm_cross_entropy", "measure", "meta_forward", "meta_step", "on",
           "sequential_classifier_step", "time_compare"]
