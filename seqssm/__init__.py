"""seqssm: long-sequence modeling of DNA and audio with selective state space models."""

from seqssm.errors import InputError
from seqssm.models import load_model
from seqssm.version import __version__

__all__ = ["Embedder", "InputError", "SeqEmbedder", "__version__", "load_model"]


def __getattr__(name: str):
    # Embedder pulls in scikit-learn: imported on first use so that `seqssm --help` stays fast.
    if name in ("Embedder", "SeqEmbedder"):
        from seqssm import embedder

        return getattr(embedder, name)
    raise AttributeError(f"module 'seqssm' has no attribute {name!r}")
