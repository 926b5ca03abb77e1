"""Errors the user can fix. The CLI turns them into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a config value, a file, a name, a shape. The message names the problem."""


class NonFiniteError(UserError):
    """Training met a NaN or Inf loss or gradient and the config says to stop."""
