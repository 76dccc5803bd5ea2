"""The exception types the protocol core may raise.

Only ``RemoteProtocolError`` may escape code that parses bytes from a peer, a bundle or
any other untrusted source: callers catch exactly one type and never see a ``KeyError``,
``TypeError`` or a library's own exception for bad input.
"""


class FieldsyncProtocolError(Exception):
    """Base of every error raised by ``fieldsync_protocol``."""


class RemoteProtocolError(FieldsyncProtocolError):
    """Untrusted input (from a peer, a bundle, a file) is malformed, forged or refused."""


class LocalProtocolError(FieldsyncProtocolError):
    """The local caller used the protocol core wrongly (a bug in our own code)."""
