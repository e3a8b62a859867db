"""The one exception type for mistakes a user can fix.

Library code raises `UserError` for bad input (a missing file, an unknown
preset, a malformed config, a corrupt checkpoint). The CLI prints its message
as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do."""
