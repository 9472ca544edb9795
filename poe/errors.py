"""The error type the CLIs turn into a single `error: ...` line and a non-zero exit (the query
server answers it as a JSON error with a 4xx status)."""


class PoEError(Exception):
    """A user-facing problem: bad input, missing data or checkpoint, incompatible file."""


class MissingExpert(PoEError):
    """A query names a task whose expert the pool does not have (yet)."""
