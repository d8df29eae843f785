"""Helpers for the one-line error messages every posestream command gives."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 300
    characters: enough to say what went wrong in a one-line error that names the file."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
