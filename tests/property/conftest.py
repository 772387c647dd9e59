"""Shared parts of the property tests: one template stack per module in the session's moto server,
a view of everything the emulator stores, output capture, and strategies for HTTP requests.

Examples are derandomized, so every run (and CI) tries the same inputs. For a longer, random
search set ``KITEHOOKS_HYPOTHESIS_PROFILE=deep`` (ten times the examples, new ones each run).
Reading the emulator's state in-process (:class:`EmulatorStores`) is what makes thousands of
examples fit in CI's budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any
from urllib.parse import quote

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from local.gateway import GatewayRequest, Route, RouteMatch, build_event
from local.provision import ResourceValues, provision
from tests.conftest import REGION, TEMPLATE, TEST_API_KEY, TEST_API_SECRET, point_boto3_at

settings.register_profile(
    "kitehooks",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    # Large bodies and AWS round trips are the point here, not a slow strategy.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile(
    "deep", parent=settings.get_profile("kitehooks"), derandomize=False, max_examples=1000
)
# Not loaded as the default: other modules' Hypothesis tests keep their own settings.
_PROFILE = settings.get_profile(os.environ.get("KITEHOOKS_HYPOTHESIS_PROFILE", "kitehooks"))


def property_settings(examples: int) -> settings:
    """The profile's settings with ``examples`` examples (ten times as many in the deep profile)."""
    return settings(_PROFILE, max_examples=max(1, examples * _PROFILE.max_examples // 100))


# --- the stack -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_env(moto_endpoint: str) -> Iterator[pytest.MonkeyPatch]:
    """``aws_env`` for a whole module: boto3 pointed at the session's moto server."""
    with pytest.MonkeyPatch.context() as patch:
        point_boto3_at(patch, moto_endpoint)
        yield patch


@pytest.fixture(scope="module")
def module_stack(module_env: pytest.MonkeyPatch, quiet_emulator: None) -> ResourceValues:
    """The template's resources, provisioned once for all the examples of a module."""
    credentials = json.dumps({"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET})
    return provision(
        TEMPLATE,
        stack_name=f"p{uuid.uuid4().hex[:10]}",
        region=REGION,
        secret_values={"ApiCredentialsSecret": credentials},
    )


# --- what the emulator stores --------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedMessage:
    queue: str
    body: str
    group_id: str | None
    deduplication_id: str | None


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    body: bytes
    delete_marker: bool = False  # a deletion in a versioned bucket is a write too


@dataclass(frozen=True)
class StoredItem:
    table: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SecretVersion:
    name: str
    secret_string: str | None = field(repr=False)  # a session holds tokens: never in a report


@dataclass(frozen=True)
class Changes:
    """What was added to the emulator between two looks: every queue, bucket, table and secret."""

    messages: list[QueuedMessage]
    objects: list[StoredObject]
    items: list[StoredItem]
    secret_versions: list[SecretVersion]

    @property
    def nothing(self) -> bool:
        return not (self.messages or self.objects or self.items or self.secret_versions)

    def __str__(self) -> str:
        return (
            f"messages={[(m.queue, m.body[:80]) for m in self.messages]} "
            f"objects={[(o.bucket, o.key, len(o.body)) for o in self.objects]} "
            f"items={[i.attributes for i in self.items]} "
            f"secret_versions={[s.name for s in self.secret_versions]}"
        )


def _message(queue: Any, message: Any) -> QueuedMessage:
    return QueuedMessage(queue.name, message.body, message.group_id, message.deduplication_id)


def _object(bucket: Any, version: Any) -> StoredObject:
    if not hasattr(version, "value"):
        return StoredObject(bucket.name, version.name, b"", delete_marker=True)
    return StoredObject(bucket.name, version.name, bytes(version.value))


def _item(table: Any, item: Any) -> StoredItem:
    return StoredItem(table.name, item.to_json()["Attributes"])


def _secret_version(secret: Any, version: Any) -> SecretVersion:
    return SecretVersion(secret.name, version.get("secret_string"))


# What each kind of container holds, and a signature of it that costs no copy: containers that
# did not change (almost all of them, in a long test session) are then skipped cheaply.
Signature = tuple[int, ...]


def _queue_members(queue: Any) -> list[object]:
    return list(queue._messages)


def _queue_signature(queue: Any) -> Signature:
    messages = queue._messages  # appended at the end, removed anywhere, replaced by a purge
    return (id(messages), len(messages), id(messages[-1]) if messages else 0)


def _bucket_members(bucket: Any) -> list[object]:
    # Every version of every key: the key store maps each name to its list of versions.
    return list(chain.from_iterable(dict.values(bucket.keys)))


def _bucket_signature(bucket: Any) -> Signature:
    versions = dict.values(bucket.keys)  # name -> its versions, oldest first
    if bucket.is_versioned:  # every write appends a version (or a delete marker)
        return (len(versions), sum(map(len, versions)))
    return (len(versions), sum(map(id, versions)))  # an overwrite replaces the list


def _table_members(table: Any) -> list[object]:
    return list(table.all_items())


def _table_signature(table: Any) -> Signature:
    items = table.items  # hash key -> item (with a range key: -> dict of items)
    nested = sum(len(value) for value in items.values() if isinstance(value, dict))
    return (len(items), sum(map(id, items.values())), nested)


def _secret_members(secret: Any) -> list[object]:
    return list(getattr(secret, "versions", {}).values())


def _secret_signature(secret: Any) -> Signature:
    versions = getattr(secret, "versions", {})
    return (len(versions), sum(map(id, versions.values())))


@dataclass
class _Container:
    """A queue, bucket, table or secret as last seen."""

    container: object
    signature: Signature
    members: dict[int, object]  # by id; the references keep ids from being reused


Describe = Callable[[Any], object]


class EmulatorStores:
    """Everything the moto server holds in this account and region, read from its own memory.

    The server runs in this process (``ThreadedMotoServer``), so its state can be read in
    microseconds where an HTTP call costs ~4 ms; thousands of examples need that. The handlers
    under test still reach it over HTTP only. ``test_the_store_view_sees_writes_made_over_http``
    keeps this view honest against writes made through the AWS APIs.
    """

    def __init__(self, region: str = REGION, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self._region = region
        self._account_id = account_id
        self._seen: dict[int, _Container] = {}
        self.changes(describe=False)  # what is there already is the baseline

    def _containers(self) -> Iterator[tuple[object, Signature, Callable[[], list[object]], Describe]]:
        """Every container, its signature, how to list what it holds, and how to describe one thing."""
        sqs = get_backend("sqs")[self._account_id][self._region]
        for queue in list(sqs.queues.values()):
            yield queue, _queue_signature(queue), partial(_queue_members, queue), partial(_message, queue)
        s3 = get_backend("s3")[self._account_id]["aws"]
        for bucket in list(s3.buckets.values()):
            yield (
                bucket,
                _bucket_signature(bucket),
                partial(_bucket_members, bucket),
                partial(_object, bucket),
            )
        dynamodb = get_backend("dynamodb")[self._account_id][self._region]
        for table in list(dynamodb.tables.values()):
            yield table, _table_signature(table), partial(_table_members, table), partial(_item, table)
        secrets = get_backend("secretsmanager")[self._account_id][self._region]
        for secret in list(secrets.secrets.values()):
            signature = _secret_signature(secret)
            yield secret, signature, partial(_secret_members, secret), partial(_secret_version, secret)

    def changes(self, describe: bool = True) -> Changes:
        """What was added since the previous call (a replaced object counts as added)."""
        found: list[object] = []
        seen: dict[int, _Container] = {}
        for container, signature, members, description in self._containers():
            before = self._seen.get(id(container))
            if before is None or before.container is not container:
                before = _Container(container, (), {})
            if before.signature != signature:
                held = members()
                if describe:
                    found += [description(m) for m in held if id(m) not in before.members]
                before = _Container(container, signature, {id(member): member for member in held})
            seen[id(container)] = before
        self._seen = seen
        return Changes(
            messages=[thing for thing in found if isinstance(thing, QueuedMessage)],
            objects=[thing for thing in found if isinstance(thing, StoredObject)],
            items=[thing for thing in found if isinstance(thing, StoredItem)],
            secret_versions=[thing for thing in found if isinstance(thing, SecretVersion)],
        )

    def queued(self, queue_name: str) -> list[QueuedMessage]:
        """Every message the queue holds now, received or not."""
        queue = get_backend("sqs")[self._account_id][self._region].queues[queue_name]
        return [_message(queue, message) for message in queue._messages]


@pytest.fixture(scope="module")
def stores(module_stack: ResourceValues) -> EmulatorStores:
    return EmulatorStores()


# --- output -------------------------------------------------------------------------------------


class OutputCapture:
    """Everything one invocation writes: the service's log records (formatted by Powertools' own
    formatter) and whatever reaches stdout and stderr (metrics are printed there).

    During an invocation the capture is the service logger's only handler: thousands of
    examples would otherwise flood pytest's own log capture. Make it after the function is
    loaded, so that Powertools' formatter exists to be borrowed."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        self._handler = logging.StreamHandler(self._stream)
        formatters = [handler.formatter for handler in logging.getLogger("kitehooks").handlers]
        self._handler.setFormatter(
            next(f for f in formatters if isinstance(f, LambdaPowertoolsFormatter))  # its JSON lines
        )

    def call[T](self, invocation: Callable[[], T]) -> tuple[T, str]:
        self._stream.seek(0)
        self._stream.truncate()
        service_logger = logging.getLogger("kitehooks")
        handlers, propagate = service_logger.handlers, service_logger.propagate
        service_logger.handlers, service_logger.propagate = [self._handler], False
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                result = invocation()
        finally:
            service_logger.handlers, service_logger.propagate = handlers, propagate
        return result, self._stream.getvalue() + stdout.getvalue() + stderr.getvalue()


@pytest.fixture(scope="module")
def quiet_emulator() -> Iterator[None]:
    """The moto server logs every request it serves: thousands per module, kept by pytest."""
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    yield
    werkzeug.setLevel(level)


def assert_no_secret(output: str, *values: str) -> None:
    """The planted api_secret and ``values`` (tokens, checksums) appear nowhere in ``output``."""
    for value in (TEST_API_SECRET, *values):
        assert value not in output, "a secret value reached a response or a log line"


def assert_header_values_are_single_lines(headers: Mapping[str, Any], cookies: list[str]) -> None:
    for name, value in headers.items():
        assert isinstance(value, str)
        assert not {"\r", "\n"} & set(value), f"header {name} spans lines"
    for cookie in cookies:
        assert not {"\r", "\n"} & set(cookie), "a cookie spans lines"


# --- requests -----------------------------------------------------------------------------------


def gateway_event(
    method: str,
    path: str,
    route: str,
    *,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    request_id: str = "property-request",
    scheme: str = "https",
) -> dict[str, Any]:
    """The payload 2.0 event the deployed API gives ``route`` for this request (the gateway's own
    builder, as in ``local.samples.http_api_event``, but with every header under the caller's control)."""
    route_method, _, route_path = route.partition(" ")
    request = GatewayRequest(
        method=method,
        raw_path=path,
        raw_query=query,
        headers=list(headers or []),
        body=body,
        source_ip="203.0.113.10",
        server_port=443,
    )
    return build_event(
        request,
        RouteMatch(Route("PropertyFunction", "Property", route_method, route_path), {}),
        request_id=request_id,
        epoch_seconds=1646279665.0,
        forwarded_proto=scheme,
    )


# Every code point, surrogates and controls included: what a hostile client can put in a JSON
# string with \u escapes (bodies) or percent-encoding (query strings).
_HOSTILE_CHARACTERS = (
    "\x00\t\n\r\x1b\x7f\x85\u2028\u202e\ufeff\ufffd\uffff\ud800\udbff\udc00\U0001f600é/\\%&=;,.\"'<>"
)
any_text = st.text(st.characters() | st.sampled_from(_HOSTILE_CHARACTERS), max_size=40)
printable_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
)

methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "post", "get"])

extra_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "accept",
                "accept-encoding",
                "content-length",
                "content-encoding",
                "transfer-encoding",
                "x-forwarded-for",
                "x-forwarded-proto",
                "origin",
                "referer",
                "x-amzn-trace-id",
                "authorization",
                "x-kite-version",
            ]
        )
        | st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20),
        header_text,
    ),
    max_size=4,
)

cookie_parts = st.lists(
    st.one_of(
        st.builds(lambda name, value: f"{name}={value}", printable_ascii, printable_ascii),
        printable_ascii,
        st.builds(lambda value: f"kitehooks_login={value}", printable_ascii | any_text),
        any_text,
    ),
    max_size=4,
)


# --- the login pages ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BrowserRequest:
    """A request a browser (or anyone) makes to /login or /callback."""

    query: str = ""
    cookies: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    # Deployed, API Gateway serves HTTPS only; the local stack serves plain HTTP.
    scheme: str = "https"

    def event(self, path: str, request_id: str) -> dict[str, Any]:
        headers = [("host", "kitehooks.example"), ("user-agent", "Mozilla/5.0"), *self.headers]
        if self.cookies:
            headers.append(("cookie", "; ".join(self.cookies)))
        return gateway_event(
            self.method,
            path,
            f"GET {path}",
            query=self.query,
            headers=headers,
            request_id=request_id,
            scheme=self.scheme,
        )


# The page's message: a paragraph, but not the brand line above the title.
_PAGE_MESSAGE = re.compile(r'<p(?![^>]*class="brand")[^>]*>(.*?)</p>', re.DOTALL)


def check_page_answer(response: dict[str, Any], routed: bool = True) -> int:
    """The status of a /login or /callback answer that is neither a 5xx nor a 4xx without a
    reason: an HTML page for every request its route serves, a redirect with a Location."""
    status = response["statusCode"]
    assert isinstance(status, int)
    assert status < 500, f"{status} without a fault: {response.get('body', '')[:300]}"
    headers: dict[str, str] = response.get("headers") or {}
    assert_header_values_are_single_lines(headers, response.get("cookies") or [])
    if 300 <= status < 400:
        assert headers.get("Location"), "a redirect without a Location"
        return status
    body: str = response.get("body") or ""
    if routed or headers.get("Content-Type", "").startswith("text/html"):
        assert headers.get("Content-Type", "").startswith("text/html"), headers
        found = _PAGE_MESSAGE.search(body)
        assert found is not None, body[:300]
        assert re.sub(r"<[^>]*>", "", found.group(1)).strip(), "a page without a message"
    else:  # a method the route does not serve: any 4xx that says why
        assert 400 <= status < 500, status
        answer = json.loads(body)
        assert str(answer.get("message") or answer.get("reason") or "").strip(), body
    return status


def cookies_set(response: dict[str, Any]) -> dict[str, str]:
    """Name -> value of every cookie the answer sets (not the ones it clears)."""
    found = {}
    for cookie in response.get("cookies") or []:
        first, *attributes = (part.strip() for part in cookie.split(";"))
        name, _, value = first.partition("=")
        if value and "max-age=0" not in {attribute.lower() for attribute in attributes}:
            found[name] = value
    return found


def is_same_site_path(location: str) -> bool:
    """Where a browser that follows ``location`` stays on this site: a path, not "//host",
    "/\\host" or a URL, once browsers drop tabs and newlines and read "\\" as "/"."""
    seen = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return seen.startswith("/") and not seen.startswith("//") and not any(ord(c) < 0x20 for c in seen)


def query_string(parameters: list[tuple[str, str]], encoded: bool) -> str:
    """A raw query string: each part percent-encoded as a browser would, or sent as it is."""
    if encoded:
        return "&".join(
            f"{quote(name, safe='', errors='surrogatepass')}={quote(value, safe='', errors='surrogatepass')}"
            for name, value in parameters
        )
    return "&".join(f"{name}={value}" for name, value in parameters)


# Paths people really use, and what an attacker or a broken link puts in ?next=.
same_site_paths = st.builds(
    lambda parts: "/" + "/".join(parts),
    st.lists(st.text(string.ascii_letters + string.digits + "-_.~", max_size=12), max_size=4),
) | st.builds(
    lambda path, query: f"{path}?{query}",
    st.sampled_from(["/orders", "/", "/positions/open"]),
    st.text(string.ascii_letters + string.digits + "=&", max_size=20),
)
next_values = st.one_of(
    same_site_paths,
    st.builds(lambda text: "/" + text, any_text),
    any_text,
    st.sampled_from(
        [
            "",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/%2F%2Fevil.example",
            "/%0d%0aSet-Cookie:%20x=1",
            "/\r\nSet-Cookie: x=1",
            "\\\\evil.example",
            " /orders",
        ]
    ),
    # Around the limits: 512 characters, and non-ASCII that grows 6 to 12 times in the state.
    st.integers(500, 2100).map(lambda n: "/" + "a" * n),
    st.tuples(st.sampled_from(["é", "\u20ac", "\U0001f600", "अ"]), st.integers(1, 600)).map(
        lambda repeat: "/" + repeat[0] * repeat[1]
    ),
)
