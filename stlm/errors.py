"""The one exception type for mistakes a user can fix.

Library code raises `UserError` for bad input (a missing file, an unknown
preset, a malformed config, a corrupt checkpoint). The CLI prints its message
as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do."""


def torch_load_message(exc: BaseException) -> str:
    """A `torch.load(weights_only=True)` error as one short clause, without torch's advice to
    load with weights_only=False: that would run code from the file, never what to do with a
    checkpoint someone else wrote."""
    text = str(exc)
    if "weights_only" in text or "Weights only load failed" in text:
        reason = text.partition("WeightsUnpickler error:")[2]
        reason = next((line.strip() for line in reason.splitlines() if line.strip()), "")
        reason = reason.split(". Please", 1)[0].rstrip(" .")
        detail = f" ({reason})" if reason else ""
        return f"it is not a file of tensors alone, and stlm never unpickles anything else{detail}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.split(". ", 1)[0].rstrip(" .:") or type(exc).__name__
