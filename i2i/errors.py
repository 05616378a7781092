"""The one exception type i2i raises for bad input; the CLI prints its message as a single line."""


class I2IError(Exception):
    """A problem the user can fix: the message names the bad key, file or value and says what to do."""


class Interrupted(I2IError):
    """Training was stopped by the user (Ctrl-C) after a checkpoint was saved."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library messages can span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
