"""The one exception type for mistakes a user can fix.

The CLI turns a `UserError` into one line on stderr and exit code 2; anything
else is a bug in kqv and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: a path, a value, a file's contents.

    The message names the problem and, where it helps, what to do about it.
    """


class Terminated(BaseException):
    """SIGTERM arrived (kqv.cli turns the signal into this): like KeyboardInterrupt, not an error of the user's."""
