"""The one exception type for bad user input.

Anything the user can fix (a malformed CSV row, a missing file, an unknown config key) raises
UserError with a one-line message naming the file, line or value. The CLI prints it without a
traceback and exits with status 2.
"""


class UserError(Exception):
    """Bad input from the user; the message is one line and names what is wrong."""

    exit_code = 2


def where(path, line=None) -> str:
    """Format a location for an error message: 'file' or 'file:line'."""
    return f"{path}:{line}" if line is not None else str(path)
