"""``dropnotes estimate``: predict each chapter's GPU time on a CPU, in seconds, without a GPU.

For every chapter and model group of a profile, one training step of the real architecture at the
profile's sizes is run on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) under

* :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matmul and convolution FLOPs of
  the step (forward and backward), and
* :class:`~dropnotes.costmodel.KernelCounter`, a ``TorchDispatchMode`` that counts the aten operations that
  launch work (views and metadata operations launch nothing and are skipped; a fused operation counts once).

A group's predicted time is ``runs * steps * max(FLOPs / (f * peak), kernels * c)``: the step is either
compute-bound at a fraction ``f`` of the GPU's dense peak (bf16 under autocast, else fp32) or
launch-bound at ``c`` seconds per kernel (a third of that inside a CUDA graph). Evaluation passes are
groups of their own (forward only). The two constants are fitted to the stored H100 runs in
``results/*/full.json`` (their wall times and measured throughputs), and the fit's residual at each
calibration point is printed with ``--calibrate``: a prediction is only as good as that error.

The counting and the time model sit below the chapters, in :mod:`dropnotes.costmodel`; each chapter declares
its own model groups (its ``groups``, ``timed_steps``, ``compare_steps``: the chapter contract,
:mod:`dropnotes.experiments.contract`). This package loops over the registry and names no chapter:
:mod:`~dropnotes.estimate.calibration` (the fit to the stored GPU runs, the estimate of a profile),
:mod:`~dropnotes.estimate.device` (steps measured on a real device), :mod:`~dropnotes.estimate.commands` (the
command's modes) and :mod:`~dropnotes.estimate.local` (a
profile's wall time on this machine, before it runs).
"""

from dropnotes.costmodel import (BANDWIDTH_FRACTION, DEFAULT_FRACTION, DEFAULT_LAUNCH_S, GRAPH_LAUNCH_FACTOR,
                                 PEAK_BANDWIDTH, PEAK_FLOPS, Cost, Group, KernelCounter, measure, meta_forward, meta_step)
from dropnotes.estimate.calibration import (calibrate, calibration_points, chapter_groups, chapters,
                                           estimate, per_chapter, predictions_path, store_predictions, stored_prediction)
from dropnotes.estimate.device import (DEVICE_CHECK_PATH, checked_steps, compare_chapters, compare_steps, device_check,
                                      device_check_points)
from dropnotes.estimate.local import op_seconds, predict_here

__all__ = ["BANDWIDTH_FRACTION", "Cost", "DEFAULT_FRACTION", "DEFAULT_LAUNCH_S", "DEVICE_CHECK_PATH",
           "GRAPH_LAUNCH_FACTOR", "Group", "KernelCounter", "PEAK_BANDWIDTH", "PEAK_FLOPS", "calibrate",
           "calibration_points", "chapter_groups", "chapters", "checked_steps", "compare_chapters", "compare_steps",
           "device_check", "device_check_points", "estimate", "measure", "meta_forward",
           "meta_step", "op_seconds", "per_chapter", "predict_here", "predictions_path", "store_predictions",
           "stored_prediction"]
