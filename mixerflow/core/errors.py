"""The one exception type for mistakes a user can make (bad config, missing data, ...).

The command line prints these as a single ``error: ...`` line and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


class LostPeer(UserError):
    """Under torchrun, another process of the group died or became unreachable. Every rank
    that survives says so (other errors are told by the main rank alone)."""
