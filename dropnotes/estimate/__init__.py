"""``dropnotes estimate``: predict each chapter's GPU time on a CPU, in seconds, without a GPU.

For every chapter and model group of a profile, one training step of the real architecture at the
profile's sizes is run on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) under

* :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matmul and convolution FLOPs of
  the step (forward and backward), and
* :class:`KernelCounter`, a ``TorchDispatchMode`` that counts the aten operations that launch work
  (views and metadata operations launch nothing and are skipped; a fused operation counts once).

A group's predicted time is ``runs * steps * max(FLOPs / (f * peak), kernels * c)``: the step is either
compute-bound at a fraction ``f`` of the GPU's dense peak (bf16 under autocast, else fp32) or
launch-bound at ``c`` seconds per kernel (a third of that inside a CUDA graph). Evaluation passes are
groups of their own (forward only). The two constants are fitted to the stored H100 runs in
``results/*/full.json`` (their wall times and measured throughputs), and the fit's residual at each
calibration point is printed with ``--calibrate``: a prediction is only as good as that error.

The package, one concern a file: :mod:`~dropnotes.estimate.counter` (FLOPs, kernels and bytes of one step on
the meta device), :mod:`~dropnotes.estimate.timemodel` (the constants and :class:`Group`),
:mod:`~dropnotes.estimate.groups` (every chapter's model groups), :mod:`~dropnotes.estimate.calibration` (the
fit to the stored GPU runs, the estimate of a profile) and :mod:`~dropnotes.estimate.device` (steps measured on a
real device) and :mod:`~dropnotes.estimate.local` (a profile's wall time on this machine, before it runs).
"""

from dropnotes.estimate.calibration import (calibrate, calibration_points, estimate, per_chapter, predictions_path,
                                           store_predictions, stored_prediction)
from dropnotes.estimate.counter import Cost, KernelCounter, _meta_forward, _meta_step, measure
from dropnotes.estimate.device import (COMPARE_CHAPTERS, DEVICE_CHECK_PATH, checked_steps, compare_steps, device_check,
                                      device_check_points)
from dropnotes.estimate.local import op_seconds, predict_here
from dropnotes.estimate.groups import GROUPS, _gpt_step_fn, _lstm_step_fn, chapter_groups, config_from_record
from dropnotes.estimate.timemodel import (BANDWIDTH_FRACTION, DEFAULT_FRACTION, DEFAULT_LAUNCH_S, GRAPH_LAUNCH_FACTOR,
                                         PEAK_BANDWIDTH, PEAK_FLOPS, Group)

__all__ = ["BANDWIDTH_FRACTION", "COMPARE_CHAPTERS", "Cost", "DEFAULT_FRACTION", "DEFAULT_LAUNCH_S", "DEVICE_CHECK_PATH",
           "GRAPH_LAUNCH_FACTOR", "GROUPS", "Group", "KernelCounter", "PEAK_BANDWIDTH", "PEAK_FLOPS", "_gpt_step_fn",
           "_lstm_step_fn", "_meta_forward", "_meta_step", "calibrate", "calibration_points", "chapter_groups",
           "checked_steps", "compare_steps", "config_from_record", "device_check", "device_check_points", "estimate",
           "measure", "op_seconds", "per_chapter", "predict_here", "predictions_path", "store_predictions", "stored_prediction"]
