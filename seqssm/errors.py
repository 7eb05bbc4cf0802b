"""The one exception type for user mistakes.

Anything a user can fix (a missing file, a malformed FASTA, a window longer than the genome, a
directory that is not a checkpoint) raises :class:`InputError` with one line saying what, where and
how to fix it. The CLI prints that line and exits with code 2, without a traceback; any other
exception is a bug in seqssm and keeps its traceback.
"""


class InputError(ValueError):
    """A problem with the user's input or arguments, reported in one line."""
