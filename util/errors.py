"""Errors caused by the user's input (options, data, checkpoints).

Entry points catch ``UserError`` and print its message without a traceback: the message
itself must name the file or option at fault and say how to fix it.
"""


class UserError(Exception):
    """Base class: a problem the user can fix; printed without a traceback."""


class OptionError(UserError):
    """A command-line option is wrong or inconsistent with another one."""


class DatasetError(UserError):
    """The dataset folder is missing, empty, or holds bad files."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or was built with different options."""


class WeightsError(UserError):
    """Pretrained weights that a component needs are not available."""


class TrainingDiverged(UserError):
    """A loss became NaN or infinite."""
