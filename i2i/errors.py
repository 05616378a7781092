"""The one exception type i2i raises for bad input; the CLI prints its message as a single line."""


class I2IError(Exception):
    """A problem the user can fix: the message names the bad key, file or value and says what to do."""


class Interrupted(I2IError):
    """Training was stopped by the user (Ctrl-C) after a checkpoint was saved."""
