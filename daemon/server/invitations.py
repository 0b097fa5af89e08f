"""The daemon's persistent CURVE identity and the client keys it invited (``daemon invite/revoke/clients``).

One private file (0600, beside the connection file: ``connection.keys.json``) holds the daemon's server
key pair, so that invitation files stay valid across restarts, and the public key and name of every
client invited.  Client secret keys are never kept here: each lives only in the invitation file handed
to that client.  ``invite`` and ``revoke`` change the file under a lock on ``connection.keys.lock`` beside
it, so that neither undoes the other.  The running daemon's ZAP handler asks :meth:`InvitationStore.name_of` at
every handshake, and the store reads the file again whenever it has changed on disk, so ``invite`` and
``revoke`` take effect from the next connection without a restart.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..wire.private_files import UnsafeFileError, read_private_file, write_private_file
from .auth import KeyPair
from .lifecycle import exclusively

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
CONNECTION_FILE_CLIENT = "connection-file"  # the name of the key pair a daemon issues at start for its own file


class InvitationError(Exception):
    """An invitation cannot be issued, found or withdrawn; the message says why."""


@dataclass(frozen=True)
class Invitation:
    name: str
    public: str  # the client's Z85 public key
    issued_at: float  # seconds since the epoch


def keys_path(connection_file: Path) -> Path:
    """The key file that goes with a connection file."""
    stem = connection_file.stem if connection_file.suffix == ".json" else connection_file.name
    return connection_file.with_name(f"{stem}.keys.json")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name == CONNECTION_FILE_CLIENT:
        raise InvitationError(f"{name!r} is not a usable client name: 1 to 64 letters, digits, '.', '_', '@' or '-', "
                              f"starting with a letter or digit, and not {CONNECTION_FILE_CLIENT!r}.")


class InvitationStore:
    """The key file, read again when it changes.  Thread-safe: the ZAP thread reads it, commands write it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._server: KeyPair | None = None
        self._clients: dict[str, Invitation] = {}  # by public key
        self.load_error: str | None = None  # why the last reload failed (then no invited key is admitted)

    # -- reading ------------------------------------------------------------------------------------
    def _reload_if_changed(self, *, force: bool = False) -> None:
        try:
            found = os.stat(self.path)
            signature = (found.st_mtime_ns, found.st_size, found.st_ino)
        except FileNotFoundError:
            signature = None
        if signature == self._signature and self.load_error is None and not force:
            return
        self._signature = signature
        if signature is None:
            self._server, self._clients, self.load_error = None, {}, None
            return
        try:
            data = json.loads(read_private_file(self.path).decode("utf-8"))
            server = data["server"]
            self._server = KeyPair(str(server["public"]), str(server["secret"]))
            clients = [Invitation(str(c["name"]), str(c["public"]), float(c["issued_at"])) for c in data["clients"]]
        except (OSError, UnsafeFileError, ValueError, KeyError, TypeError, RecursionError) as error:
            # Fail closed: a key file that cannot be trusted or parsed admits no invited client.
            self._clients, self.load_error = {}, f"{self.path}: {error}"
            return
        self._clients = {client.public: client for client in clients}
        self.load_error = None

    def name_of(self, public_key: str) -> str | None:
        """The name of the invited client with this public key, or None (never invited, or revoked)."""
        with self._lock:
            self._reload_if_changed()
            client = self._clients.get(public_key)
            return None if client is None else client.name

    def clients(self) -> list[Invitation]:
        with self._lock:
            self._reload_if_changed()
            return sorted(self._clients.values(), key=lambda client: client.issued_at)

    # -- writing ------------------------------------------------------------------------------------
    def server_key(self) -> KeyPair:
        """The daemon's key pair, made and saved on first use."""
        with self._lock:
            self._reload_if_changed()
            self._check_usable()
            if self._server is not None:
                return self._server
        with self._changing():
            self._server = self._server or KeyPair.generate()
            return self._server

    def invite(self, name: str, pair: KeyPair | None = None) -> KeyPair:
        """Admit ``pair`` (by default a new one) under ``name``, unique among the invited clients."""
        check_name(name)
        pair = pair or KeyPair.generate()
        with self._changing():
            if any(client.name == name for client in self._clients.values()):
                raise InvitationError(f"A client named {name!r} is already invited; revoke it first "
                                      f"(python -m daemon revoke {name}) or choose another name.")
            self._server = self._server or KeyPair.generate()
            self._clients[pair.public] = Invitation(name, pair.public, time.time())
        return pair

    def revoke(self, name: str) -> Invitation:
        with self._changing():
            found = [client for client in self._clients.values() if client.name == name]
            if not found:
                raise InvitationError(f"No client named {name!r} is invited (see python -m daemon clients).")
            del self._clients[found[0].public]
        return found[0]

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Read the file, change it (the block) and replace it, under a lock beside it across all three: two commands
        at once (revoke and invite) would otherwise each write back their own copy, undoing the other's change."""
        with self._lock, exclusively(self.path.with_suffix(".lock")):
            self._reload_if_changed(force=True)
            self._check_usable()
            yield
            assert self._server is not None
            data = {"server": asdict(self._server), "clients": [asdict(client) for client in self._clients.values()]}
            write_private_file(self.path, json.dumps(data, indent=1).encode())  # read again at the next use

    def _check_usable(self) -> None:
        if self.load_error is not None:
            raise InvitationError(f"The daemon's key file cannot be used ({self.load_error}); "
                                  "remove it to make a new one (every invitation then has to be issued again).")
