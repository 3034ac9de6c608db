"""Executing a chapter notebook with papermill: one function, used by ``dropnotes run``, the sweeps and
the tests.

The kernel talks to papermill over IPC sockets (files in a private runtime folder) instead of TCP on
localhost, so it does not print ipykernel's "running over TCP without encryption" warning at every start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


class IPCKernelManager(KernelManager):
    """A kernel manager whose kernels use the IPC transport, with sockets in a private temporary folder
    (jupyter_client's default socket name is relative to the working folder, so two kernels started there
    at once would collide)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("transport", "ipc")
        self._socket_dir = tempfile.mkdtemp(prefix="dropnotes-kernel-")
        kwargs.setdefault("ip", os.path.join(self._socket_dir, "kernel"))
        super().__init__(**kwargs)

    def cleanup_resources(self, restart: bool = False) -> None:
        super().cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def execute(src: str | Path, out: str | Path, parameters: dict[str, Any] | None = None, *,
            progress_bar: bool = False, log_output: bool = False) -> None:
    """Run ``src`` with ``parameters`` injected, in the notebook's own folder, writing ``out`` as it goes;
    raises papermill's ``PapermillExecutionError`` on a failing cell (``out`` then holds the partial run)."""
    import papermill as pm

    src = Path(src)
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in (parameters or {}).items()}
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3", cwd=str(src.parent),
                        progress_bar=progress_bar, log_output=log_output, kernel_manager_class=IPCKernelManager)
