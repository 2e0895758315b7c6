"""The one exception type for user mistakes: the CLI prints its message and exits with code 2."""


class UserError(ValueError):
    """A mistake in the command line, a recipe or an input; the message says what to do."""


class OtherRunError(UserError):
    """An output holds another run of the same command; `changed` names what differs."""

    def __init__(self, message: str, changed: list[str]) -> None:
        super().__init__(message)
        self.changed = changed


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for
    one-line error messages that quote a library's reason."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
