"""htpasswd files: :class:`HtpasswdChecker`, a ``twisted.cred`` checker
whose answers take as long for every user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from wsplugin.auth._common import log
from wsplugin.errors import ConfigError

__all__ = ["HtpasswdChecker"]


def _hash_kind(hashed: str) -> str:
    """``{SHA}`` or ``bcrypt cost N``: entries of one kind take equally long."""
    if hashed.startswith("{SHA}"):
        return "{SHA}"
    cost = hashed[4:6]
    return f"bcrypt cost {int(cost)}" if cost.isdigit() else "bcrypt"


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """Checks user names and passwords against an htpasswd-style file.

    Lines are ``user:hash``; ``#`` starts a comment. Supported hashes:
    bcrypt (``htpasswd -B``: ``$2y$``, ``$2b$``, ``$2a$``) and ``{SHA}``
    (``htpasswd -s``, weak: prefer bcrypt, with ``-C 12``).

    Every entry must use the same scheme and bcrypt cost: how long a 401
    takes would otherwise tell users apart (here a ``{SHA}`` user is
    answered in about 1 ms, a bcrypt cost-12 user in about 300 ms, a cost-5
    user in about 3 ms). A file that mixes them is refused, or, with
    ``allow_mixed=True``, accepted with a warning. An unknown user is
    checked against a dummy entry of the file's scheme and cost, so a wrong
    user name takes as long as a wrong password.

    bcrypt checks run in a thread pool so they never stall the reactor; put
    a :class:`LoginThrottle` in front (``BasicAuth`` and ``LoginResource``
    do) to bound how many run and wait.

    Args:
        path: The file. It is read now and again by :meth:`reload`.
        allow_mixed: Accept a file that mixes schemes or costs (warning).
        threadpool: The ``twisted.python.threadpool.ThreadPool`` bcrypt runs
            in; the reactor's shared pool if None.
        reactor: The reactor delivering the results; the global one if None.

    Raises:
        ConfigError: a missing file, a line with an unsupported hash, or
            (without ``allow_mixed``) mixed schemes or costs.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        path: str | Path,
        *,
        allow_mixed: bool = False,
        threadpool: Any = None,
        reactor: Any = None,
    ) -> None:
        self.path = Path(path)
        self.allow_mixed = allow_mixed
        self._threadpool = threadpool
        self._reactor = reactor
        self._users: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again (the old entries stay if it is refused)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read the password file {self.path}: {e.strerror}"
            ) from None
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"{self.path}:{number}: expected user:hash")
            if not (hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}"))):
                raise ConfigError(
                    f"{self.path}:{number}: unsupported hash for {user!r}; use "
                    "bcrypt (htpasswd -B) or {SHA} (htpasswd -s)"
                )
            users[user] = hashed
        self._check_uniform(users)
        self._users = users
        self._dummy = _dummy_entry(list(users.values()))

    def _check_uniform(self, users: dict[str, str]) -> None:
        kinds: dict[str, list[str]] = {}
        for user, hashed in users.items():
            kinds.setdefault(_hash_kind(hashed), []).append(user)
        if len(kinds) < 2:
            return
        summary = "; ".join(
            f"{kind}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
            for kind, names in sorted(kinds.items())
        )
        problem = (
            f"{self.path} mixes password hashes ({summary}): how long a wrong "
            "password takes tells these users apart"
        )
        if not self.allow_mixed:
            raise ConfigError(
                problem + "; hash every entry the same way (htpasswd -B -C 12), "
                "or allow it (allow_mixed=True, --allow-mixed-hashes)"
            )
        log.warn("{problem}; accepted (allow_mixed)", problem=problem)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        """The user name, if the password matches; else UnauthorizedLogin."""
        username = credentials.username.decode("utf-8", "replace")
        password = credentials.password
        hashed = self._users.get(username)
        if hashed is None:
            hashed = self._dummy  # same work as for a known user
        if hashed.startswith("{SHA}"):
            digest = base64.b64encode(hashlib.sha1(password).digest()).decode()
            ok = hmac.compare_digest(digest, hashed[5:]) and username in self._users
            return succeed(credentials.username) if ok else fail(UnauthorizedLogin())
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        pool = self._threadpool or reactor.getThreadPool()
        d = deferToThreadPool(reactor, pool, _bcrypt_check, password, hashed)

        def decide(ok: bool) -> Any:
            if ok and username in self._users:
                return credentials.username
            raise UnauthorizedLogin()

        return d.addCallback(decide)


def _dummy_entry(entries: list[str]) -> str:
    """A hash of a random password in the most common scheme (and bcrypt cost)
    among ``entries``, so unknown users take as long as known ones."""
    import bcrypt

    kinds = ["{SHA}" if e.startswith("{SHA}") else e[:7] for e in entries]
    common = max(sorted(set(kinds)), key=kinds.count) if kinds else "$2b$12"
    secret = secrets.token_bytes(16)
    if common == "{SHA}":
        return "{SHA}" + base64.b64encode(hashlib.sha1(secret).digest()).decode()
    cost = int(common[4:6]) if common[4:6].isdigit() else 12
    return bcrypt.hashpw(secret, bcrypt.gensalt(cost)).decode()


def _bcrypt_check(password: bytes, hashed: str) -> bool:
    import bcrypt

    try:
        return bool(
            bcrypt.checkpw(password, hashed.replace("$2y$", "$2b$", 1).encode())
        )
    except ValueError:
        return False
