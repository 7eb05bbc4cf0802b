"""seqssm: long-sequence modeling of DNA and audio with selective state space models."""

from seqssm.errors import InputError

__version__ = "0.1.0"

__all__ = ["InputError", "__version__"]
