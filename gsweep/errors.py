"""Errors shown to the user as one clear line (no traceback)."""


class UserError(RuntimeError):
    """Bad input or state the user can fix: the message names the file, key or value."""
