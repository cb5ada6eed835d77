"""One error type for user mistakes.

The CLI prints an `AtelierError` as a single line and exits with code 2; anything
else is a bug and keeps its traceback. Messages name the file, line or field and
say how to fix it.
"""


class AtelierError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag)."""

    exit_code = 2
