"""The one error class the user sees: a problem the user can fix.

Library modules raise `UserError` with one line that names the file or value and a fix that works
(only flags that exist in the script that prints it); `ownership.cli.run` prints it to stderr and
exits 2, with the traceback only under --debug.
"""


class UserError(Exception):
    """A problem the user can fix; printed as one line (no traceback unless --debug)."""
