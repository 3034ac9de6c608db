import subprocess
import sys
from pathlib import Path

import torch
import pytest

pytestmark = pytest.mark.slow  # integration: subprocesses, kills, torchrun or whole-chapter sizes

SCRIPT = Path(__file__).with_name("ddp_script.py")


def test_training_loop_under_torchrun_matches_one_process(tmp_path):
    """The same training code, launched by torchrun on 2 CPU processes (gloo, DDP), ends with the same
    parameters as one process: each rank trains on its half of every batch and DDP averages gradients."""
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(SCRIPT), str(single)], check=True, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(SCRIPT), str(ddp)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(single), torch.load(ddp)
    assert a["world"] == 1 and b["world"] == 2
    assert a["seen"] == 3 * 256 and b["seen"] == a["seen"] // 2, "each rank trains on its half of every batch"
    for name, tensor in a["state"].items():
        assert torch.allclose(tensor, b["state"][name], atol=1e-5), name
    assert abs(a["loss"][-1] - b["loss"][-1]) < 1e-5
