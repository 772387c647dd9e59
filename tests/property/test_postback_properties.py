"""POST /postback under generated requests: what it answers and what it stores, whatever arrives.

Invariants, each checked per request against everything the emulator holds:
- the answer is JSON, never 5xx (no fault is injected here), with a reason when it is a 4xx;
- nothing is queued unless the body carries a valid checksum for its own order_id and
  order_timestamp, and what is queued is the body exactly as the client sent it;
- a 2xx means the postback is stored; a 4xx stores nothing, except that a checksum mismatch
  (403) may keep one copy, no larger than MAX_POSTBACK_BYTES, under ``undelivered/rejected/``;
- every signed, Kite-shaped postback within the size limit is queued, once however often it
  is delivered;
- neither the api_secret nor a checksum reaches the answer or the logs.

Which 4xx a given junk request gets is deliberately not pinned down: only the class is.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import boto3
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from kitehooks.kite.checksum import postback_checksum
from kitehooks.orders.states import OrderState, order_state
from kitehooks.postbacks.postback import PostbackRejected, parse_postback
from local.provision import ResourceValues
from local.samples import KITE_POSTBACK_EXAMPLE
from tests.conftest import TEST_API_SECRET, FakeLambdaContext, load_function, reset_layer_caches
from tests.property.conftest import (
    Changes,
    EmulatorStores,
    OutputCapture,
    any_text,
    assert_header_values_are_single_lines,
    assert_no_secret,
    extra_headers,
    gateway_event,
    header_text,
    methods,
    property_settings,
)

# The deployed default once Kite's real sizes are the bound; set explicitly so the properties
# do not depend on which default the template has today.
MAX_POSTBACK_BYTES = 16 * 1024
OTHER_SECRET = "kt-other-secret-0000"

Encoding = Literal["gateway", "base64", "unpadded-base64", "urlsafe-base64", "invalid-base64"]


@dataclass(frozen=True)
class PostbackRequest:
    """One HTTP request to POST /postback, as the client sends it, and how the event carries it."""

    body: bytes
    method: str = "POST"
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    encoding: Encoding = "gateway"
    invalid_base64: str = ""  # the event's body when ``encoding`` is "invalid-base64"
    deliveries: int = 1

    @property
    def client_bytes(self) -> bytes | None:
        """The body the handler must see, or None when the event carries no decodable body."""
        return None if self.encoding == "invalid-base64" else self.body

    def event(self, request_id: str) -> dict[str, Any]:
        headers = [("host", "kitehooks.example"), ("user-agent", "Kite-Postback")]
        if self.content_type is not None:
            headers.append(("content-type", self.content_type))
        event = gateway_event(
            self.method,
            "/postback",
            "POST /postback",
            headers=[*headers, *self.headers],
            body=self.body,
            request_id=request_id,
        )
        encoded = base64.b64encode(self.body).decode("ascii")
        match self.encoding:
            case "gateway":  # API Gateway's choice, from the content type and the bytes
                return event
            case "base64":
                event["body"] = encoded
            case "unpadded-base64":
                event["body"] = encoded.rstrip("=")
            case "urlsafe-base64":
                event["body"] = base64.urlsafe_b64encode(self.body).decode("ascii")
            case "invalid-base64":
                event["body"] = self.invalid_base64
        event["isBase64Encoded"] = True
        return event


# --- the oracle ---------------------------------------------------------------------------------


def document_of(raw: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def expected_checksum(document: dict[str, Any]) -> str | None:
    order_id, order_timestamp = document.get("order_id"), document.get("order_timestamp")
    if not isinstance(order_id, str) or not isinstance(order_timestamp, str):
        return None
    try:
        return postback_checksum(order_id, order_timestamp, TEST_API_SECRET)
    except UnicodeEncodeError:  # a lone surrogate cannot have been signed by Kite
        return None


def carries_valid_checksum(raw: bytes) -> bool:
    """Kite's rule, computed here independently of the handler's parser."""
    document = document_of(raw)
    if document is None:
        return False
    expected, received = expected_checksum(document), document.get("checksum")
    return expected is not None and isinstance(received, str) and received.lower() == expected


def checksums_to_keep_secret(raw: bytes | None) -> list[str]:
    """The body's checksum and the one it should have had: neither may be echoed or logged,
    unless the client also put it somewhere that may be (its order_id, say)."""
    document = document_of(raw) if raw is not None else None
    if document is None:
        return []
    candidates = [document.get("checksum"), expected_checksum(document)]
    rest = json.dumps({k: v for k, v in document.items() if k != "checksum"}, ensure_ascii=False)
    return [c for c in candidates if isinstance(c, str) and len(c) >= 32 and c not in rest]


# --- requests -----------------------------------------------------------------------------------

KITE_STATUSES = [
    "OPEN",
    "COMPLETE",
    "CANCELLED",
    "REJECTED",
    "UPDATE",
    "TRIGGER PENDING",
    "AMO REQ RECEIVED",
    "MODIFY VALIDATION PENDING",
    "OPEN PENDING",
    "VALIDATION PENDING",
]
KITE_ID_CHARACTERS = string.ascii_letters + string.digits + "._:-"
# Kite's order ids are 15-16 digits; the wider pattern is what the postback path accepts as one.
kite_order_ids = st.one_of(
    st.integers(10**14, 10**16 - 1).map(str),
    st.integers(10**14, 10**16 - 1).map(str),
    st.text(KITE_ID_CHARACTERS, min_size=1, max_size=64),
)
kite_timestamps = st.integers(1420070400, 2082758399).map(
    lambda epoch: datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")
)
kite_user_ids = st.tuples(st.sampled_from(["AB", "ZX", "QQ", "RK"]), st.integers(0, 9999)).map(
    lambda parts: f"{parts[0]}{parts[1]:04d}"
)
# Text that SQS accepts in a message body: no surrogates, no U+FFFE/U+FFFF (JSON escapes controls).
sqs_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\ufffe\uffff"), max_size=16)
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | sqs_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(sqs_text, children, max_size=3),
    max_leaves=5,
)
hostile_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=6,
)

Serialiser = Callable[[dict[str, Any]], str]
SERIALISERS: list[Serialiser] = [
    lambda order: json.dumps(order, separators=(",", ":")),  # as Kite sends it
    lambda order: json.dumps(order, separators=(",", ":"), ensure_ascii=False),
    lambda order: json.dumps(order),
    lambda order: json.dumps(order, indent=2, sort_keys=True),
    lambda order: json.dumps(dict(reversed(order.items())), ensure_ascii=False, indent="\t"),
    lambda order: json.dumps(order, separators=(",", ":")) + "\n",  # as a proxy may pass it on
]


def encode(text: str) -> bytes:
    # A lone surrogate becomes the bytes no UTF-8 decoder accepts, as a broken client would send.
    return text.encode("utf-8", "surrogatepass")


# Built once: Hypothesis validates a strategy each time one is built.
optional_user_ids = st.none() | kite_user_ids
optional_text = st.none() | sqs_text
order_meta = (
    st.sampled_from([{}, {}, {"demat_consent": "physical"}])
    | st.dictionaries(sqs_text, json_scalars, max_size=2)
    | st.dictionaries(sqs_text, json_values, max_size=2)
)
dropped_fields = st.sets(st.sampled_from(["user_id", "status", "tag", "meta", "guid"]), max_size=2)
extra_fields = st.dictionaries(sqs_text, json_scalars, max_size=2)


@st.composite
def kite_orders(draw: st.DrawFn) -> dict[str, Any]:
    """Kite's documented order with generated values, signed with the app's api_secret."""
    order = dict(KITE_POSTBACK_EXAMPLE)
    order["order_id"] = draw(kite_order_ids)
    order["order_timestamp"] = order["exchange_update_timestamp"] = draw(kite_timestamps)
    order["status"] = draw(st.sampled_from([*KITE_STATUSES, None]))
    order["user_id"] = draw(optional_user_ids)
    order["tag"] = draw(optional_text)
    order["meta"] = draw(order_meta)
    for dropped in draw(dropped_fields):
        del order[dropped]
    extra = draw(extra_fields)
    order.update({key: value for key, value in extra.items() if key not in order and key != "checksum"})
    order["checksum"] = postback_checksum(order["order_id"], order["order_timestamp"], TEST_API_SECRET)
    return order


@st.composite
def kite_postbacks(draw: st.DrawFn, max_bytes: int = MAX_POSTBACK_BYTES) -> bytes:
    """A signed Kite postback as raw bytes, sometimes padded up to exactly ``max_bytes``."""
    order = draw(kite_orders())
    serialise = draw(st.sampled_from(SERIALISERS))
    body = encode(serialise(order))
    if len(body) < max_bytes and draw(st.integers(0, 4)) == 0:
        # Kite's "tag" is free text: growing it by n ASCII characters grows the body by n bytes.
        target = max_bytes if draw(st.booleans()) else draw(st.integers(len(body) + 8, max_bytes))
        order["tag"] = ""
        unpadded = encode(serialise(order))
        order["tag"] = "x" * max(0, target - len(unpadded))
        body = encode(serialise(order))
    return body


odd_order_ids = any_text | st.text("0123456789 ", min_size=65, max_size=300)


@st.composite
def signed_oddities(draw: st.DrawFn) -> bytes:
    """Signed with the right secret, but not the way Kite sends a postback."""
    order = draw(kite_orders())
    oddity = draw(
        st.sampled_from(
            [
                "order_id",
                "timestamp",
                "types",
                "uppercase",
                "duplicate",
                "nested",
                "escaped",
                "framing",
                "oversized",
            ]
        )
    )
    serialise = draw(st.sampled_from(SERIALISERS))

    def signed(order: dict[str, Any]) -> dict[str, Any]:
        # What Kite could not have signed keeps the checksum of the original order.
        with contextlib.suppress(TypeError, UnicodeEncodeError):
            order["checksum"] = postback_checksum(
                order["order_id"], order["order_timestamp"], TEST_API_SECRET
            )
        return order

    match oddity:
        case "order_id":  # too long, unicode, controls, empty, spaces: not an SQS MessageGroupId
            order["order_id"] = draw(odd_order_ids)
            return encode(json.dumps(signed(order)))
        case "timestamp":
            order["order_timestamp"] = draw(any_text)
            return encode(json.dumps(signed(order)))
        case "types":
            key = draw(st.sampled_from(["status", "user_id", "order_id", "order_timestamp"]))
            order[key] = draw(hostile_json_values)
            return encode(json.dumps(signed(order)))
        case "uppercase":
            order["checksum"] = order["checksum"].upper()
            return encode(serialise(order))
        case "duplicate":
            key = draw(st.sampled_from(["order_id", "checksum", "status", "order_timestamp", "user_id"]))
            text = serialise(order)
            return encode(text[: text.rindex("}")] + f",{json.dumps(key)}:{json.dumps(draw(any_text))}" + "}")
        case "nested":
            depth = draw(st.integers(100, 5000))
            text = json.dumps(order, separators=(",", ":"))
            return encode(text[:-1] + ',"meta":' + "[" * depth + "]" * depth + "}")
        case "escaped":  # the same order_id, spelled with \\u escapes
            text = json.dumps(order, separators=(",", ":"))
            spelled = "".join(f"\\u{ord(character):04x}" for character in order["order_id"])
            return encode(text.replace(json.dumps(order["order_id"]), f'"{spelled}"', 1))
        case "framing":
            prefix = draw(st.sampled_from(["\ufeff", " \n\t", "", "\x00"]))
            suffix = draw(st.sampled_from(["", "\n", " x", "{}", "\x00", "]"]))
            return encode(prefix + serialise(order) + suffix)
        case _:  # "oversized": signed and well-formed, but over the configured limit
            target = draw(st.integers(MAX_POSTBACK_BYTES + 1, 2 * MAX_POSTBACK_BYTES + 100))
            order["tag"] = ""
            order["tag"] = "x" * max(0, target - len(encode(serialise(order))))
            return encode(serialise(order))


@st.composite
def wrong_checksums(draw: st.DrawFn) -> bytes:
    """Kite's shape with a checksum that does not match it."""
    order = draw(kite_orders())
    wrong = draw(
        st.sampled_from(["other-secret", "flipped", "other-order", "length", "not-hex", "empty-secret"])
    )
    checksum: str = order["checksum"]
    match wrong:
        case "other-secret":
            checksum = postback_checksum(order["order_id"], order["order_timestamp"], OTHER_SECRET)
        case "flipped":
            at = draw(st.integers(0, 63))
            checksum = checksum[:at] + ("0" if checksum[at] != "0" else "1") + checksum[at + 1 :]
        case "other-order":  # a genuine checksum for another order: a replay with a changed field
            order["order_timestamp"] = draw(kite_timestamps.filter(lambda t: t != order["order_timestamp"]))
        case "length":
            checksum = draw(st.sampled_from([checksum[:-1], checksum + "0", checksum * 2, checksum[:32]]))
        case "not-hex":
            checksum = draw(st.text("ghijklmnopqrstuvwxyz-+ ", min_size=64, max_size=64))
        case _:
            checksum = hashlib.sha256((order["order_id"] + order["order_timestamp"]).encode()).hexdigest()
    order["checksum"] = checksum
    return encode(draw(st.sampled_from(SERIALISERS))(order))


@st.composite
def mutated_postbacks(draw: st.DrawFn) -> bytes:
    """A signed postback with a few bytes changed, cut, or added."""
    body = bytearray(draw(kite_postbacks(max_bytes=4096)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        match draw(st.sampled_from(["flip", "cut", "insert", "truncate"])):
            case "flip" if at < len(body):
                body[at] ^= 1 << draw(st.integers(0, 7))
            case "cut":
                del body[at : at + draw(st.integers(1, 16))]
            case "insert":
                body[at:at] = draw(st.binary(min_size=1, max_size=8))
            case _:
                del body[at:]
    return bytes(body)


kiteish_keys = st.sampled_from(["order_id", "order_timestamp", "checksum", "status", "user_id"]) | any_text
kiteish_values = (
    hostile_json_values
    | kite_order_ids
    | kite_timestamps
    | st.text("0123456789abcdef", min_size=64, max_size=64)
)
kiteish = st.dictionaries(kiteish_keys, kiteish_values, max_size=6) | hostile_json_values


@st.composite
def kiteish_documents(draw: st.DrawFn) -> bytes:
    """Kite's field names with values of any type, and any other JSON document."""
    return encode(json.dumps(draw(kiteish), ensure_ascii=draw(st.booleans())))


large_sizes = st.sampled_from(
    [MAX_POSTBACK_BYTES - 1, MAX_POSTBACK_BYTES, MAX_POSTBACK_BYTES + 1]
) | st.integers(MAX_POSTBACK_BYTES - 64, 4 * MAX_POSTBACK_BYTES)
large_patterns = st.sampled_from([b"[", b"{", b" ", b'{"a":', b"\xff", b"0", b'"\\ud800']) | st.binary(
    min_size=1, max_size=16
)


@st.composite
def large_bodies(draw: st.DrawFn) -> bytes:
    """Around the size limit and far beyond it, built by repetition to stay cheap to generate."""
    size, pattern = draw(large_sizes), draw(large_patterns)
    return (pattern * (size // len(pattern) + 1))[:size]


def base64_of_a_postback() -> st.SearchStrategy[bytes]:
    """A signed postback base64-encoded by the client itself (and not flagged as such)."""
    return kite_postbacks(max_bytes=4096).map(base64.b64encode)


@st.composite
def other_encodings(draw: st.DrawFn) -> bytes:
    """A signed order in UTF-16 or UTF-32: valid JSON to some parsers, not UTF-8."""
    return json.dumps(draw(kite_orders())).encode(draw(st.sampled_from(["utf-16", "utf-32-le", "utf-16-be"])))


any_body = st.one_of(
    st.binary(max_size=512),
    st.just(b""),
    st.sampled_from([b" ", b"\n", b"null", b"[]", b"{}", b'""', b"0", b"\xef\xbb\xbf{}", b"\xed\xa0\x80"]),
    kiteish_documents(),
    kite_postbacks(),
    signed_oddities(),
    wrong_checksums(),
    mutated_postbacks(),
    large_bodies(),
    base64_of_a_postback(),
    other_encodings(),
)

content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "application/vnd.kite+json",
            "image/png",
        ]
    ),
    header_text,
)

invalid_base64_text = st.one_of(
    any_text.filter(lambda text: text.strip() != ""),
    st.sampled_from(["this is *not* base64", "eyJ", "e", "====", "eyJhIjox\nfQ==", "ey Jh", "é", "%%%%"]),
)


ENCODINGS: list[Encoding] = ["gateway", "base64", "unpadded-base64", "urlsafe-base64", "invalid-base64"]


@st.composite
def postback_requests(
    draw: st.DrawFn, bodies: st.SearchStrategy[bytes] = any_body, hostile_framing: bool = True
) -> PostbackRequest:
    """A request carrying one of ``bodies``; with ``hostile_framing``, also under other methods
    and broken base64 (one request in five)."""
    framed = hostile_framing and draw(st.integers(0, 4)) == 0
    encoding: Encoding = draw(st.sampled_from(ENCODINGS if framed else ENCODINGS[:2]))
    return PostbackRequest(
        body=draw(bodies),
        method=draw(methods) if framed else "POST",
        content_type=draw(content_types),
        headers=tuple(draw(extra_headers)),
        encoding=encoding,
        invalid_base64=draw(invalid_base64_text) if encoding == "invalid-base64" else "",
        deliveries=draw(st.integers(1, 2)),
    )


# --- the function -------------------------------------------------------------------------------


@dataclass
class Delivery:
    status: int
    answer: dict[str, Any]
    changes: Changes


class PostbackEndpoint:
    """A warm postback container wired to the module's stack, and a look at every store after
    each request it serves."""

    def __init__(self, stack: ResourceValues, stores: EmulatorStores) -> None:
        self.queue_name = stack["OrderUpdatesQueue"]["QueueName"]
        self._queue_url = stack["OrderUpdatesQueue"]["Ref"]
        self._sqs = boto3.client("sqs")
        self._app = load_function("postback")
        self._output = OutputCapture()  # after the function made its logger
        self._stores = stores
        self._requests = 0

    def deliver(self, request: PostbackRequest) -> list[Delivery]:
        deliveries = []
        self._empty_queue()
        self._stores.changes()  # what earlier examples stored is not this one's doing
        for _ in range(request.deliveries):
            self._requests += 1
            api_event = request.event(f"prop-{self._requests}")
            response, logged = self._output.call(partial(self._app.handler, api_event, FakeLambdaContext()))
            status, answer = json_answer(response)
            event(f"answered {status}")
            assert_no_secret(logged + response["body"], *checksums_to_keep_secret(request.client_bytes))
            deliveries.append(Delivery(status, answer, self._stores.changes()))
        return deliveries

    def _empty_queue(self) -> None:
        """Drain the queue as a consumer would, now and then: the emulator's send time grows with
        the queue's length. Deduplication holds while a message is in the queue, so an example
        that repeats an earlier body finds it there once, or queues it once again."""
        while len(self._stores.queued(self.queue_name)) > 20:
            received = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )["Messages"]
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(received)
                ],
            )

    def queued_bodies(self, raw: bytes) -> list[str]:
        """The queued messages that carry ``raw``'s order update: one order state is one message
        whatever its bytes (the deduplication id is the state's), so an earlier body of the same
        state counts; a body that names no state is matched byte for byte."""
        text = raw.decode("utf-8")
        state = _state_of(raw)
        return [
            message.body
            for message in self._stores.queued(self.queue_name)
            if (message.body == text if state is None else _state_of(message.body.encode("utf-8")) == state)
        ]


def _state_of(raw: bytes) -> OrderState | None:
    try:
        signed = parse_postback(raw, 10 * MAX_POSTBACK_BYTES)
    except PostbackRejected:
        return None
    return order_state(signed.order_id, signed.status, signed.filled_quantity)


@pytest.fixture(scope="module")
def endpoint(
    module_stack: ResourceValues,
    module_env: pytest.MonkeyPatch,
    stores: EmulatorStores,
) -> Iterator[PostbackEndpoint]:
    module_env.setenv("ORDER_UPDATES_QUEUE_URL", module_stack["OrderUpdatesQueue"]["Ref"])
    module_env.setenv("UNDELIVERED_BUCKET", module_stack["UndeliveredPostbacksBucket"]["Ref"])
    module_env.setenv("API_CREDENTIALS_SECRET_ID", module_stack["ApiCredentialsSecret"]["Ref"])
    module_env.setenv("MAX_POSTBACK_BYTES", str(MAX_POSTBACK_BYTES))
    reset_layer_caches()
    yield PostbackEndpoint(module_stack, stores)
    reset_layer_caches()


def json_answer(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of an answer that is neither a 5xx nor a 4xx without a reason."""
    status = response["statusCode"]
    assert isinstance(status, int)
    assert status < 500, f"{status} without a fault: {response['body'][:300]}"
    assert status in (200, 202) or 400 <= status < 500, status
    assert response["headers"]["Content-Type"].startswith("application/json")
    assert_header_values_are_single_lines(response["headers"], [])
    answer = json.loads(response["body"])
    assert isinstance(answer, dict)
    if status >= 400:
        assert isinstance(answer.get("reason"), str)
        assert answer["reason"].strip(), "a 4xx must say why"
    return status, answer


def check_what_was_stored(request: PostbackRequest, delivery: Delivery, endpoint: PostbackEndpoint) -> None:
    """The storage invariants for one answered request."""
    changes, raw = delivery.changes, request.client_bytes
    # The postback path writes nothing but queue messages and parked bodies.
    assert changes.items == []
    assert changes.secret_versions == []
    for message in changes.messages:
        assert message.queue == endpoint.queue_name
        assert carries_valid_checksum(message.body.encode("utf-8")), "queued without a valid checksum"
        if raw is not None:
            assert message.body.encode("utf-8") == raw, "queued body differs from what was sent"
        assert message.group_id == json.loads(message.body)["order_id"]

    if 400 <= delivery.status < 500:
        assert changes.messages == [], f"{delivery.status} but queued"
        if delivery.status == 403:
            assert len(changes.objects) <= 1, f"403 stored {changes}"
            for stored in changes.objects:
                assert stored.key.startswith("undelivered/rejected/"), stored.key
                assert len(stored.body) <= MAX_POSTBACK_BYTES, f"rejected copy of {len(stored.body)} bytes"
        else:
            assert changes.objects == [], f"{delivery.status} stored {changes}"
        return

    # A 2xx: the postback is stored, and only a postback with a valid checksum may be.
    if raw is not None:
        assert carries_valid_checksum(raw), f"{delivery.status} for a body without a valid checksum"
    if delivery.status == 200:
        assert changes.objects == [], f"queued and parked: {changes}"
        if raw is not None:
            assert len(endpoint.queued_bodies(raw)) == 1, "answered 200 but not in the queue exactly once"
        else:
            assert len(changes.messages) <= 1
    else:  # 202: parked as verified, for redrive
        assert changes.messages == []
        [parked] = changes.objects
        assert parked.key.startswith("undelivered/verified/"), parked.key
        assert carries_valid_checksum(parked.body)
        if raw is not None:
            assert parked.body == raw


# --- the properties -----------------------------------------------------------------------------


@property_settings(1500)
@given(request=postback_requests())
@example(request=PostbackRequest(body=b"", encoding="invalid-base64", invalid_base64="this is *not* base64"))
@example(
    request=PostbackRequest(body=b'{"order_id":"1","order_timestamp":"x","checksum":"' + b"0" * 64 + b'"}')
)
def test_any_request_gets_a_json_answer_and_stores_only_verified_postbacks(
    endpoint: PostbackEndpoint, request: PostbackRequest
) -> None:
    for delivery in endpoint.deliver(request):
        check_what_was_stored(request, delivery, endpoint)
        if request.method.upper() != "POST":
            assert 400 <= delivery.status < 500
            assert delivery.changes.nothing
        if request.client_bytes is not None and len(request.client_bytes) > MAX_POSTBACK_BYTES:
            assert 400 <= delivery.status < 500, "over the size limit but accepted"
            assert delivery.changes.nothing, f"over the size limit but stored {delivery.changes}"
        if request.client_bytes is not None and not carries_valid_checksum(request.client_bytes):
            assert 400 <= delivery.status < 500


@property_settings(300)
@given(
    request=st.builds(
        PostbackRequest,
        body=kite_postbacks(),
        content_type=content_types,
        headers=extra_headers.map(tuple),
        encoding=st.sampled_from(["gateway", "base64"]),
        deliveries=st.integers(1, 2),
    )
)
def test_every_kite_postback_is_queued_once_byte_for_byte(
    endpoint: PostbackEndpoint, request: PostbackRequest
) -> None:
    assert len(request.body) <= MAX_POSTBACK_BYTES
    deliveries = endpoint.deliver(request)
    for delivery in deliveries:
        check_what_was_stored(request, delivery, endpoint)
        assert delivery.status == 200, delivery.answer
        assert delivery.answer["order_id"] == json.loads(request.body)["order_id"]
    # However often Kite (or a retry) delivers it, the queue holds it once.
    assert sum(len(delivery.changes.messages) for delivery in deliveries) <= 1
    [queued] = endpoint.queued_bodies(request.body)
    # This body, or an earlier example's body of the same order state (which SQS kept as the one).
    assert queued == request.body.decode("utf-8") or _state_of(request.body) is not None


@property_settings(300)
@given(request=postback_requests(bodies=wrong_checksums() | mutated_postbacks(), hostile_framing=False))
def test_a_checksum_that_does_not_match_is_refused_and_costs_at_most_one_bounded_copy(
    endpoint: PostbackEndpoint, request: PostbackRequest
) -> None:
    for delivery in endpoint.deliver(request):
        check_what_was_stored(request, delivery, endpoint)
        if request.client_bytes is not None and not carries_valid_checksum(request.client_bytes):
            assert 400 <= delivery.status < 500
            assert delivery.changes.messages == []
