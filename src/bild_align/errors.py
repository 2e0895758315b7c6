"""The one exception type for user mistakes: the CLI prints its message and exits with code 2."""


class UserError(ValueError):
    """A mistake in the command line, a recipe or an input; the message says what to do."""
