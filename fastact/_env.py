"""fastact's on/off environment settings, read one way: 1/true/yes/on or 0/false/no/off, in any
case and with spaces around; unset or empty gives the default; anything else warns once and gives
the default (FASTACT_C_REBUILD=off had rebuilt, FASTACT_FASTCALL=off had left the fast path on)."""
import os
import warnings

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_warned = set()


def flag(variable, default=None):
    setting = os.environ.get(variable, "").strip().lower()
    if setting in TRUE:
        return True
    if setting in FALSE:
        return False
    if setting and (variable, setting) not in _warned:
        _warned.add((variable, setting))
        warnings.warn(f"fastact: {variable}={os.environ[variable]!r} is not one of "
                      f"{', '.join(TRUE)} or {', '.join(FALSE)}; taken as unset", RuntimeWarning,
                      stacklevel=3)
    return default
