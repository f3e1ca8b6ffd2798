"""The one exception a training run raises for a user's mistake or a run that cannot go on."""


from netspec.ground.errors import ToolError


class TrainError(ToolError):
    """A run that cannot start or go on; the message says why and what to do."""
