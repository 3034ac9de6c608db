"""The time model: a step is compute-, launch- or memory-bound; its constants (the H100's peaks, the fitted
fraction of peak and launch cost) and :class:`Group`, one chapter's model group with its predicted seconds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PEAK_FLOPS = {"bf16": 989e12, "fp32": 67e12}
# One H100 SXM's HBM3, 3.35 TB/s (datasheet). Not fitted: no stored run is memory-bound. A large copy on the
# H200 machines here reached about 90 % of that chip's datasheet bandwidth (device KINDS.md); the engine's
# elementwise kernels are smaller, so 80 % is assumed.
PEAK_BANDWIDTH = 3.35e12
BANDWIDTH_FRACTION = 0.8
GRAPH_LAUNCH_FACTOR = 1 / 3  # a kernel inside a CUDA graph costs about a third of an eager launch (design notes)
# Fitted by `dropnotes estimate --calibrate` to the stored H100 runs (2026-12-02: 7 points, errors -51 % to
# +15 %; see calibrate()); kept here so that a prediction needs no GPU and no stored file. Refitted after the
# counting changed (steady-state optimizer steps, bf16 casts, fused attention): 22.7 µs before.
DEFAULT_FRACTION = 0.10
DEFAULT_LAUNCH_S = 1.25 ** 15 * 1e-6  # 28.4 µs, the calibration grid's point


@dataclass
class Group:
    """One model group of a chapter: ``runs`` sequential trainings (1 when batched) of ``steps`` steps each."""

    chapter: str
    group: str
    runs: int
    steps: int
    flops_per_step: float
    kernels_per_step: int
    dtype: str = "fp32"
    captured: bool = False
    models_per_step: int = 1
    fixed_s: float = 0.0  # time that is not steps (a benchmark's timing budget)
    bytes_per_step: float = 0.0

    def step_s(self, fraction: float, launch_s: float) -> float:
        compute = self.flops_per_step / (fraction * PEAK_FLOPS[self.dtype])
        launch = self.kernels_per_step * launch_s * (GRAPH_LAUNCH_FACTOR if self.captured else 1.0)
        memory = self.bytes_per_step / (BANDWIDTH_FRACTION * PEAK_BANDWIDTH)
        return max(compute, launch, memory)

    def predicted_s(self, fraction: float = DEFAULT_FRACTION, launch_s: float = DEFAULT_LAUNCH_S) -> float:
        return self.runs * self.steps * self.step_s(fraction, launch_s) + self.fixed_s

    def as_dict(self, fraction: float = DEFAULT_FRACTION, launch_s: float = DEFAULT_LAUNCH_S) -> dict:
        d = dataclasses.asdict(self)
        d["predicted_s"] = round(self.predicted_s(fraction, launch_s), 2)
        return d
