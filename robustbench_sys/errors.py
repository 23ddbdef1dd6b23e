"""User-facing errors: one line naming the bad file/option and what to do."""


class UserError(Exception):
    """Bad input from the user (CLI exit code 2)."""
