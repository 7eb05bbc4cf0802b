"""``python -m seqssm``: the same CLI as the ``seqssm`` console script (for environments without it on PATH)."""

from seqssm.cli import main

if __name__ == "__main__":  # not when a package walk (pkgutil) imports it
    main()
