"""The plug-in's one exception for failures whose message is written for the user as it stands."""


class UserError(Exception):
    pass
