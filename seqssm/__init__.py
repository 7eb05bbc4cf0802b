"""seqssm: long-sequence modeling of DNA and audio with selective state space models."""

from seqssm.errors import InputError
from seqssm.models import load_model

__version__ = "0.1.0"

__all__ = ["InputError", "__version__", "load_model"]
