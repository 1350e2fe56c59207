"""User-facing errors: one line, no traceback, non-zero exit (see ``cli.main``)."""


class SdmError(Exception):
    """A problem with the user's input that deserves a one-line message, not a traceback."""
