"""Errors a user can act on: the CLI prints one line and exits non-zero, never a traceback."""


class DpulabError(Exception):
    """Something went wrong that the user can fix; `exit_code` tells the CLI how to exit."""

    exit_code = 1


class InputError(DpulabError):
    """Bad lab file, flag or name: nothing was changed."""

    exit_code = 2


class NotOursError(DpulabError):
    """An object with one of the lab's names exists but carries no mark of this lab."""

    exit_code = 3
