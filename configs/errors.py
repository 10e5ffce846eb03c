"""The one error type users see: a one-line message naming the problem (CLI prints it, exit 2)."""


class MoraError(Exception):
    """Bad input or an unmet precondition, reported as one line without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
