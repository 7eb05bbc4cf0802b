"""The package version, in a module that imports nothing, so any module can read it without a loop; and
the versions that decide a run's numbers (:func:`versions`, written beside every checkpoint)."""

from __future__ import annotations

__version__ = "0.1.0"


def versions() -> dict:
    """seqssm, Python, torch, numpy, the platform, the GPU's name and triton, as strings."""
    import platform

    import numpy as np
    import torch

    info = {
        "seqssm": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    return info
