"""``python -m seqssm``: the same CLI as the ``seqssm`` console script (for environments without it on PATH)."""

from seqssm.cli import main

main()
