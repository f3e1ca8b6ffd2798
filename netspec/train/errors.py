"""The one exception a training run raises for a user's mistake or a run that cannot go on."""


class TrainError(Exception):
    """A run that cannot start or go on; the message says why and what to do."""
