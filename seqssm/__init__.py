"""seqssm: long-sequence modeling of DNA and audio with selective state space models."""

from seqssm.errors import InputError
from seqssm.version import __version__

__all__ = ["Embedder", "InputError", "SeqEmbedder", "__version__", "load_model"]


def __getattr__(name: str):
    # torch (load_model) and scikit-learn (Embedder) are imported on first use, so that `seqssm --help`
    # and the CLI's argument checks start without them.
    if name == "load_model":
        from seqssm.models import load_model

        return load_model
    if name in ("Embedder", "SeqEmbedder"):
        from seqssm import embedder

        return getattr(embedder, name)
    raise AttributeError(f"module 'seqssm' has no attribute {name!r}")
