"""The one exception type for user mistakes: the CLI prints its message without a traceback and exits 2."""


class UserError(Exception):
    """A bad override, value or file given by the user. The message names the key, the value and what is valid."""


def choices_message(key: str, value: object, valid: object) -> str:
    """The house wording for a value outside a fixed set of choices."""
    valid_list = ", ".join(str(v) for v in valid)
    return f"{key}={value!r} is not valid. Choose one of: {valid_list}"
