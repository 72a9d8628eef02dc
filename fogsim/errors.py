"""The one exception type a user is meant to read.

Anything raised as ``FogsimError`` reaches the command line as a single line on stderr and
exit code 2, with no traceback; every other exception is a bug in fogsim.
"""


class FogsimError(Exception):
    """Bad input or an impossible request, described in one actionable sentence."""

    exit_code = 2
