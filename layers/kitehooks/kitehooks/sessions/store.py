"""Kite sessions kept in Secrets Manager: one secret per Kite user, ``<prefix>/<user_id>``.

The secret's JSON is the contract other systems read: user_id, user_name, api_key, access_token,
public_token, refresh_token, login_time, expires_at (next 06:00 IST, ISO 8601 with offset),
status (active|expired|revoked), updated_at.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError

from kitehooks.aws import error_code
from kitehooks.clock import IST, kite_time

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Kite expires every access token at 06:00 IST the next morning.
EXPIRY_TIME_IST = time(6, 0)
_USER_ID = re.compile(r"[A-Za-z0-9]{2,16}")

SessionStatus = Literal["active", "expired", "revoked"]


class SessionStoreError(RuntimeError):
    """The session could not be stored. The message names no token."""


@dataclass(frozen=True, slots=True)
class KiteSession:
    user_id: str
    user_name: str
    api_key: str
    access_token: str = field(repr=False)
    public_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    login_time: str
    expires_at: str
    status: SessionStatus
    updated_at: str


def next_expiry(moment: datetime) -> datetime:
    """The first 06:00 IST strictly after ``moment``."""
    local = moment.astimezone(IST)
    expiry = datetime.combine(local.date(), EXPIRY_TIME_IST, tzinfo=IST)
    return expiry if expiry > local else expiry + timedelta(days=1)


def kite_login_time(login_time: str, fallback: datetime) -> datetime:
    """Kite's login_time as an aware datetime; ``fallback`` when it is not in Kite's format."""
    return kite_time(login_time) or fallback.astimezone(IST)


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.fullmatch(user_id))


def secret_name(prefix: str, user_id: str) -> str:
    if not valid_user_id(user_id):
        raise SessionStoreError("Kite returned a user_id that is not a Kite client id")
    return f"{prefix.rstrip('/')}/{user_id}"


class SessionWriteRefused(SessionStoreError):
    """Secrets Manager answered the write with a refusal (a 4xx): it was certainly not applied.
    Any other failure (no answer, a 5xx) leaves open whether it was."""


class SessionNotFound(SessionStoreError):
    """No session secret exists for that user."""


class SessionChanged(SessionStoreError):
    """The session's current version is no longer the one read: a newer write (a login) won."""

    def __init__(self, message: str, attempted_version_id: str) -> None:
        super().__init__(message)
        self.attempted_version_id = attempted_version_id


# The label a compare-and-swap puts its new version under before moving AWSCURRENT to it. Not
# AWSCURRENT, so until the move succeeds no reader sees the new version.
PENDING_STAGE = "kitehooks-pending"
# A compare-and-swap that keeps losing (the session changing between read and write) gives up
# after this many rounds; each round re-reads and decides again on the newer version.
UPDATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as read, with the Secrets Manager version it was read from."""

    session: KiteSession
    version_id: str


class SessionStore:
    def __init__(self, secrets: SecretsManagerClient, prefix: str) -> None:
        self._secrets = secrets
        self._prefix = prefix

    def get(self, user_id: str) -> KiteSession:
        return self.read(user_id).session

    def read(self, user_id: str) -> StoredSession:
        """The current (AWSCURRENT) session and its version, for a later :meth:`replace`."""
        name = secret_name(self._prefix, user_id)
        try:
            answer = self._secrets.get_secret_value(SecretId=name)
        except self._secrets.exceptions.ResourceNotFoundException:
            raise SessionNotFound(f"no session stored for {user_id}") from None
        except (BotoCoreError, ClientError) as error:
            raise SessionStoreError(
                f"could not read the session of {user_id} ({error_code(error)})"
            ) from None
        try:
            session = KiteSession(**json.loads(answer["SecretString"]))
        except (ValueError, TypeError, KeyError):
            raise SessionStoreError(f"the session secret of {user_id} is not a kitehooks session") from None
        return StoredSession(session, answer["VersionId"])

    def replace(self, read: StoredSession, session: KiteSession) -> None:
        """Store ``session`` only if the current version is still the one ``read`` came from.

        The new version is put under a label of its own, then AWSCURRENT is moved to it with
        ``RemoveFromVersionId`` = the version read: Secrets Manager refuses the move when
        AWSCURRENT is no longer on that version (a login stored a newer one meanwhile), and the
        newer version stays current. Raises SessionChanged then.
        """
        if session.user_id != read.session.user_id:
            raise SessionStoreError("a session can only replace the same user's session")
        name = secret_name(self._prefix, session.user_id)
        version_id = str(uuid.uuid4())
        try:
            self._secrets.put_secret_value(
                SecretId=name,
                SecretString=_serialised(session),
                ClientRequestToken=version_id,
                VersionStages=[PENDING_STAGE],
            )
        except (BotoCoreError, ClientError) as error:
            raise SessionStoreError(
                f"could not store the session of {session.user_id} ({error_code(error)})"
            ) from None
        try:
            self._secrets.update_secret_version_stage(
                SecretId=name,
                VersionStage="AWSCURRENT",
                MoveToVersionId=version_id,
                RemoveFromVersionId=read.version_id,
            )
        except (BotoCoreError, ClientError) as error:
            if error_code(error) == "InvalidParameterException":
                # "AWSCURRENT not found in version <read>": it moved. Our version stays unlabelled
                # but for the pending label, which the next compare-and-swap moves on.
                raise SessionChanged(
                    f"the session of {session.user_id} changed since it was read", version_id
                ) from None
            raise SessionStoreError(
                f"could not store the session of {session.user_id} ({error_code(error)})"
            ) from None

    def update(
        self, user_id: str, change: Callable[[KiteSession], KiteSession | None]
    ) -> tuple[KiteSession, KiteSession | None]:
        """Read-modify-write as a compare-and-swap: ``(session read, session written or None)``.

        ``change`` decides on the version read and returns the new session, or None to leave it
        as it is. When another write lands between the read and ours, ours is refused and
        ``change`` decides again on the newer version, so it never overwrites what it has not seen.
        """
        attempted: tuple[str, KiteSession, KiteSession] | None = None
        for _ in range(UPDATE_ATTEMPTS):
            read = self.read(user_id)
            if attempted is not None and read.version_id == attempted[0]:
                # Our move did land (its answer was lost and botocore's retry was refused).
                return attempted[1], attempted[2]
            fresh = change(read.session)
            if fresh is None:
                return read.session, None
            try:
                self.replace(read, fresh)
            except SessionChanged as lost:
                attempted = (lost.attempted_version_id, read.session, fresh)
                continue
            return read.session, fresh
        raise SessionStoreError(f"the session of {user_id} kept changing; it was not updated")

    def user_ids(self) -> list[str]:
        """Every user with a session secret under the prefix."""
        prefix = f"{self._prefix.rstrip('/')}/"
        found: list[str] = []
        try:
            for page in self._secrets.get_paginator("list_secrets").paginate(
                Filters=[{"Key": "name", "Values": [prefix]}]
            ):
                for entry in page.get("SecretList", []):
                    name = entry.get("Name", "")
                    user_id = name.removeprefix(prefix)
                    # The name filter matches by prefix of words: keep exact <prefix>/<user_id> only.
                    if name.startswith(prefix) and valid_user_id(user_id):
                        found.append(user_id)
        except (BotoCoreError, ClientError) as error:
            raise SessionStoreError(f"could not list sessions ({error_code(error)})") from None
        return sorted(found)

    def put(self, session: KiteSession) -> str:
        """Store the session as the user's secret (created on first login); return its name."""
        name = secret_name(self._prefix, session.user_id)
        value = _serialised(session)
        try:
            try:
                self._secrets.put_secret_value(SecretId=name, SecretString=value)
            except self._secrets.exceptions.ResourceNotFoundException:
                try:
                    self._secrets.create_secret(
                        Name=name,
                        SecretString=value,
                        Description=f"Kite Connect session of {session.user_id} (kitehooks)",
                    )
                except self._secrets.exceptions.ResourceExistsException:
                    # Another login of the same user created it first: ours is the newer version.
                    self._secrets.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            failure = SessionWriteRefused if 400 <= status < 500 else SessionStoreError
            raise failure(f"could not store the session of {session.user_id} ({error_code(error)})") from None
        except BotoCoreError as error:
            raise SessionStoreError(
                f"could not store the session of {session.user_id} ({error_code(error)})"
            ) from None
        return name


def _serialised(session: KiteSession) -> str:
    return json.dumps(asdict(session), separators=(",", ":"))


def new_session(
    user_id: str,
    user_name: str,
    api_key: str,
    access_token: str,
    public_token: str,
    refresh_token: str,
    login_time: str,
    now: datetime,
) -> KiteSession:
    logged_in = kite_login_time(login_time, now)
    return KiteSession(
        user_id=user_id,
        user_name=user_name,
        api_key=api_key,
        access_token=access_token,
        public_token=public_token,
        refresh_token=refresh_token,
        login_time=logged_in.isoformat(),
        expires_at=next_expiry(logged_in).isoformat(),
        status="active",
        updated_at=now.astimezone(UTC).isoformat(),
    )


def ended(session: KiteSession, status: SessionStatus, now: datetime) -> KiteSession:
    """The session marked expired or revoked; its tokens are dropped, as they no longer work."""
    return replace(
        session,
        access_token="",
        public_token="",
        refresh_token="" if status == "revoked" else session.refresh_token,
        status=status,
        updated_at=now.astimezone(UTC).isoformat(),
    )


def renewed(
    session: KiteSession, access_token: str, public_token: str, refresh_token: str, now: datetime
) -> KiteSession:
    return replace(
        session,
        access_token=access_token,
        public_token=public_token or session.public_token,
        refresh_token=refresh_token or session.refresh_token,
        expires_at=next_expiry(now).isoformat(),
        status="active",
        updated_at=now.astimezone(UTC).isoformat(),
    )
