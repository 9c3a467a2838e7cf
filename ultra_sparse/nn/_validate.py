"""Constructor argument checks shared by the ultra_sparse layers."""

from __future__ import annotations

__all__ = ["check_choice", "check_int", "check_ratio"]


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return `value` if it is an int (not a bool) of at least `minimum`.

    Args:
        name (str): Argument name used in the error message.
        value (Any): Value to check.
        minimum (int): Smallest accepted value.

    Returns:
        (int): The checked value.

    Raises:
        TypeError: If `value` is not an int.
        ValueError: If `value` is below `minimum`.

    Examples:
        >>> check_int("c1", 16)
        16
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_ratio(name: str, value) -> float:
    """Return `value` as a float if it is a positive real number.

    Args:
        name (str): Argument name used in the error message.
        value (Any): Value to check.

    Returns:
        (float): The checked value.

    Raises:
        TypeError: If `value` is not an int or float.
        ValueError: If `value` is not positive.

    Examples:
        >>> check_ratio("e", 0.5)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def check_choice(name: str, value, choices: tuple) -> str:
    """Return `value` if it is one of `choices`.

    Args:
        name (str): Argument name used in the error message.
        value (Any): Value to check.
        choices (tuple): Accepted values.

    Returns:
        (str): The checked value.

    Raises:
        ValueError: If `value` is not one of `choices`.

    Examples:
        >>> check_choice("context", "both", ("mean", "max", "both"))
        'both'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
