"""The one error type the CLIs turn into a single `error: ...` line and a non-zero exit."""


class PoEError(Exception):
    """A user-facing problem: bad input, missing data or checkpoint, incompatible file."""
