"""The Kite simulator's order book over HTTP, with the official ``kiteconnect`` client as its peer
and postbacks received by a real HTTP server and verified with ``kitehooks.kite.checksum``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect.exceptions import InputException, NetworkException, TokenException

from kitehooks.kite.checksum import checksums_match, postback_checksum
from local.kite_orders import OrderBook, trading_day
from local.kite_simulator import KiteSimulator
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, fresh_request_token

TIMEOUT = 5
LIMIT_ORDER: dict[str, Any] = {
    "variety": "regular",
    "exchange": "NSE",
    "tradingsymbol": "SBIN",
    "transaction_type": "BUY",
    "quantity": 10,
    "product": "CNC",
    "order_type": "LIMIT",
    "price": 820.5,
    "tag": "t1",
}


@dataclass
class Received:
    body: bytes
    content_type: str


@dataclass
class PostbackReceiver:
    """A small HTTP server standing in for the app's ``/postback``."""

    url: str
    received: list[Received] = field(default_factory=list)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(item.body) for item in self.received]


@pytest.fixture
def receiver() -> Iterator[PostbackReceiver]:
    box: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            box.append(Received(self.rfile.read(length), self.headers.get("Content-Type", "")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield PostbackReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/postback", received=box)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def kite(sim: KiteSimulator, receiver: PostbackReceiver) -> KiteConnect:
    """A logged-in official client; the simulator posts order updates to ``receiver``."""
    sim.orders.configure(postback_url=receiver.url)
    client = KiteConnect(api_key=TEST_API_KEY, root=sim.url, timeout=TIMEOUT)
    client.generate_session(fresh_request_token(sim), api_secret=TEST_API_SECRET)
    return client


def _verified(payload: dict[str, Any]) -> bool:
    expected = postback_checksum(payload["order_id"], payload["order_timestamp"], TEST_API_SECRET)
    return checksums_match(expected, payload["checksum"])


def test_place_order_opens_it_with_kites_shape_and_a_signed_open_postback(
    kite: KiteConnect, receiver: PostbackReceiver
) -> None:
    order_id = kite.place_order(**LIMIT_ORDER)

    (order,) = kite.orders()
    assert order["order_id"] == order_id
    assert (order["status"], order["filled_quantity"], order["pending_quantity"]) == ("OPEN", 0, 10)
    for name in [
        "exchange_order_id",
        "exchange_update_timestamp",
        "exchange_timestamp",
        "tradingsymbol",
        "exchange",
        "transaction_type",
        "order_type",
        "product",
        "variety",
        "validity",
        "quantity",
        "price",
        "average_price",
        "status_message",
        "tag",
        "placed_by",
        "guid",
        "instrument_token",
        "cancelled_quantity",
        "market_protection",
    ]:
        assert name in order, name
    # The official client parses Kite's timestamps: the simulator writes them Kite's way.
    assert order["order_timestamp"].year >= 2026

    statuses = [state["status"] for state in kite.order_history(order_id)]
    assert statuses == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN"]

    (received,) = receiver.received
    assert received.content_type == "application/json"
    payload = json.loads(received.body)
    assert (payload["order_id"], payload["status"], payload["app_id"]) == (order_id, "OPEN", 1234)
    assert _verified(payload)
    # Signed over the strings exactly as sent: another secret does not verify.
    wrong = postback_checksum(payload["order_id"], payload["order_timestamp"], "another-secret")
    assert not checksums_match(wrong, payload["checksum"])


def test_partial_fills_are_update_postbacks_and_open_in_the_book_then_complete(
    sim: KiteSimulator, kite: KiteConnect, receiver: PostbackReceiver
) -> None:
    order_id = kite.place_order(**LIMIT_ORDER)
    sim.orders.fill(order_id, quantity=3, price=820.0)
    assert kite.orders()[0]["status"] == "OPEN"
    assert kite.orders()[0]["filled_quantity"] == 3
    sim.orders.fill(order_id, quantity=7, price=821.0)

    claims = [(p["status"], p["filled_quantity"], p["pending_quantity"]) for p in receiver.payloads()]
    assert claims == [("OPEN", 0, 10), ("UPDATE", 3, 7), ("COMPLETE", 10, 0)]
    assert all(_verified(payload) for payload in receiver.payloads())
    history = [(s["status"], s["filled_quantity"]) for s in kite.order_history(order_id)]
    assert history[-3:] == [("OPEN", 0), ("OPEN", 3), ("COMPLETE", 10)]
    assert kite.orders()[0]["average_price"] == pytest.approx(820.7)
    # Every state carries its own timestamp, never going back.
    stamps = [s["order_timestamp"] for s in kite.order_history(order_id)]
    assert stamps == sorted(stamps)


def test_modify_and_cancel_through_the_api_and_no_move_after_a_final_state(
    kite: KiteConnect, receiver: PostbackReceiver
) -> None:
    order_id = kite.place_order(**LIMIT_ORDER)
    kite.modify_order("regular", order_id, quantity=15, price=819)
    assert (kite.orders()[0]["quantity"], kite.orders()[0]["pending_quantity"]) == (15, 15)
    kite.cancel_order("regular", order_id)

    statuses = [s["status"] for s in kite.order_history(order_id)][4:]
    assert statuses == ["MODIFY VALIDATION PENDING", "MODIFY PENDING", "OPEN", "CANCEL PENDING", "CANCELLED"]
    assert [p["status"] for p in receiver.payloads()] == ["OPEN", "UPDATE", "CANCELLED"]
    assert receiver.payloads()[-1]["cancelled_quantity"] == 15

    with pytest.raises(InputException):
        kite.cancel_order("regular", order_id)
    with pytest.raises(InputException):
        kite.order_history("999999999999999")


def test_market_order_needs_market_protection(kite: KiteConnect, receiver: PostbackReceiver) -> None:
    market = {**LIMIT_ORDER, "order_type": "MARKET", "price": None}
    with pytest.raises(InputException, match="market_protection"):
        kite.place_order(**market)
    with pytest.raises(InputException, match="market_protection"):
        kite.place_order(**market, market_protection=0)
    assert kite.orders() == []

    order_id = kite.place_order(**market, market_protection=-1)
    assert kite.orders()[0]["order_id"] == order_id
    assert len(receiver.received) == 1


def test_rejected_and_bad_placements(
    sim: KiteSimulator, kite: KiteConnect, receiver: PostbackReceiver
) -> None:
    with pytest.raises(InputException):
        kite.place_order(**{**LIMIT_ORDER, "quantity": 0})
    with pytest.raises(InputException):
        kite.place_order(**{**LIMIT_ORDER, "variety": "nonsense"})
    for price in ("inf", "-1", "abc"):
        with pytest.raises(InputException, match="price"):
            kite.place_order(**{**LIMIT_ORDER, "price": price})
    assert kite.orders() == []
    order_id = sim.orders.place(
        "regular", {k: str(v) for k, v in LIMIT_ORDER.items()}, reject_reason="RMS: insufficient funds"
    )
    (state,) = kite.orders()
    assert (state["order_id"], state["status"], state["status_message"]) == (
        order_id,
        "REJECTED",
        "RMS: insufficient funds",
    )
    assert state["exchange_order_id"] is None
    assert [p["status"] for p in receiver.payloads()] == ["REJECTED"]


def test_a_dead_token_gets_a_token_exception_on_every_order_route(
    sim: KiteSimulator, kite: KiteConnect
) -> None:
    order_id = kite.place_order(**LIMIT_ORDER)
    sim.kill_access_tokens()
    with pytest.raises(TokenException) as caught:
        kite.orders()
    assert caught.value.code == 403
    with pytest.raises(TokenException):
        kite.order_history(order_id)
    with pytest.raises(TokenException):
        kite.place_order(**LIMIT_ORDER)
    # Without the version header Kite refuses before looking at the token.
    response = requests.get(f"{sim.url}/orders", timeout=TIMEOUT)
    assert response.status_code == 400
    assert len(sim.orders.orders()) == 1


def test_rate_limit_answers_429_in_kites_envelope_and_recovers(sim: KiteSimulator, kite: KiteConnect) -> None:
    kite.orders()  # unlimited by default
    sim.orders.configure(rate_limit=3)
    for _ in range(3):
        kite.orders()
    with pytest.raises(NetworkException) as caught:
        kite.orders()
    assert caught.value.code == 429
    raw = requests.get(
        f"{sim.url}/orders",
        headers={"X-Kite-Version": "3", "Authorization": f"token {TEST_API_KEY}:{kite.access_token}"},
        timeout=TIMEOUT,
    )
    assert raw.status_code == 429
    assert raw.json() == {
        "status": "error",
        "message": "Too many requests",
        "data": None,
        "error_type": "NetworkException",
    }
    time.sleep(1.05)
    assert kite.orders() == []
    sim.orders.configure(rate_limit=None)
    for _ in range(10):
        kite.orders()


def test_drop_share_is_deterministic_with_a_seed(sim: KiteSimulator, receiver: PostbackReceiver) -> None:
    def dropped_with(seed: int) -> list[bool]:
        book = OrderBook(api_key="k", api_secret="s", user_id="AB1234")
        book.configure(drop_share=0.5, seed=seed)
        for _ in range(20):
            book.fill(book.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()}))
        return [d.outcome == "dropped" for d in book.deliveries()]

    first = dropped_with(1)
    assert first == dropped_with(1)
    assert first != dropped_with(2)
    assert 0 < sum(first) < len(first)

    sim.orders.configure(postback_url=receiver.url, drop_share=1.0, seed=5)
    order_id = sim.orders.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()})
    sim.orders.fill(order_id)
    assert receiver.received == []
    assert [d.outcome for d in sim.orders.deliveries()] == ["dropped", "dropped"]
    # The book still shows what the postbacks would have said: that is what reconciling finds.
    assert sim.orders.orders()[0]["status"] == "COMPLETE"


def test_duplicate_sends_one_postback_twice_and_forge_verifies_with_an_unseen_claim(
    sim: KiteSimulator, receiver: PostbackReceiver
) -> None:
    sim.orders.configure(postback_url=receiver.url, duplicate_next=1, drop_share=1.0, seed=0)
    order_id = sim.orders.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()})
    sim.orders.configure(drop_share=0.0)
    sim.orders.fill(order_id, quantity=4)
    sim.orders.cancel(order_id)

    bodies = [item.body for item in receiver.received]
    assert len(bodies) == 4
    # Sent twice although every genuine postback was being dropped: a duplicate arrives twice.
    assert bodies[0] == bodies[1]
    assert [p["status"] for p in receiver.payloads()] == ["OPEN", "OPEN", "UPDATE", "CANCELLED"]

    claim = sim.orders.forge(order_id)
    forged = receiver.payloads()[-1]
    assert _verified(forged)  # Kite's checksum cannot tell
    genuine = receiver.payloads()[-2]
    assert forged["order_timestamp"] == genuine["order_timestamp"]
    assert (forged["status"], forged["filled_quantity"]) == (claim["status"], claim["filled_quantity"])
    assert (forged["status"], forged["filled_quantity"]) != (genuine["status"], genuine["filled_quantity"])
    history = {(s["status"], s["filled_quantity"]) for s in sim.orders.history(order_id)}
    book_status = "OPEN" if forged["status"] == "UPDATE" else forged["status"]
    assert (book_status, forged["filled_quantity"]) not in history
    assert [d.kind for d in sim.orders.deliveries()] == [
        "genuine",
        "duplicate",
        "genuine",
        "genuine",
        "forged",
    ]


def test_controls_over_http_and_a_scripted_day(sim: KiteSimulator, receiver: PostbackReceiver) -> None:
    base = f"{sim.url}/__sim/orders"
    switches = requests.post(f"{base}/switches", json={"postback_url": receiver.url}, timeout=TIMEOUT)
    assert switches.json()["data"]["postback_url"] == receiver.url
    bad = requests.post(f"{base}/switches", json={"drop_share": 2}, timeout=TIMEOUT)
    assert (bad.status_code, bad.json()["error_type"]) == (400, "InputException")

    placed = requests.post(f"{base}/place", json={**LIMIT_ORDER, "quantity": 6}, timeout=TIMEOUT)
    order_id = placed.json()["data"]["order_id"]
    filled = requests.post(f"{base}/{order_id}/fill", json={"quantity": 6}, timeout=TIMEOUT)
    assert filled.json()["data"]["status"] == "COMPLETE"
    refill = requests.post(f"{base}/{order_id}/fill", json={}, timeout=TIMEOUT)
    assert refill.status_code == 400

    day = requests.post(
        f"{base}/day",
        json={"orders": 50, "seed": 9, "drop_share": 0.2, "duplicates": 2, "forgeries": 1},
        timeout=60,
    ).json()["data"]
    assert day["orders"] == 50
    assert day["states"] >= 200
    assert day["postbacks"]["duplicate"] == 2
    assert day["postbacks"]["forged"] == 1
    assert day["postbacks"]["dropped"] > 0

    deliveries = requests.get(f"{base}/deliveries", timeout=TIMEOUT).json()["data"]
    assert all("checksum" not in json.dumps(d) for d in deliveries)
    assert len(receiver.received) == sum(1 for d in deliveries if d["outcome"] == "delivered")
    assert all(_verified(payload) for payload in receiver.payloads())
    # The switches the day used are put back.
    assert requests.post(f"{base}/switches", json={}, timeout=TIMEOUT).json()["data"]["drop_share"] == 0.0


def test_scripted_day_repeats_exactly_with_its_seed() -> None:
    def day(seed: int) -> tuple[list[dict[str, Any]], list[bytes]]:
        book = OrderBook(api_key="k", api_secret="s", user_id="AB1234")
        result = trading_day(
            book, orders=50, seed=seed, drop_share=0.2, duplicates=2, forgeries=1, start="2026-11-30 09:15:00"
        )
        states = [state for order_id in result.order_ids for state in book.history(order_id)]
        return states, [d.body for d in result.postbacks]

    first, again, other = day(4), day(4), day(5)
    assert first == again
    assert first != other
    assert len(first[0]) >= 200
    finals = {state["order_id"]: state["status"] for state in first[0]}
    assert set(finals.values()) >= {"COMPLETE", "CANCELLED", "REJECTED", "OPEN"}


def test_each_user_sees_only_their_own_orders(
    sim: KiteSimulator, kite: KiteConnect, receiver: PostbackReceiver
) -> None:
    mine = kite.place_order(**LIMIT_ORDER)
    theirs = sim.orders.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()}, user_id="CD5678")

    assert [order["order_id"] for order in kite.orders()] == [mine]
    with pytest.raises(InputException):
        kite.order_history(theirs)
    with pytest.raises(InputException):
        kite.cancel_order("regular", theirs)
    assert sim.orders.orders("CD5678")[0]["status"] == "OPEN"
    assert [(p["order_id"], p["user_id"]) for p in receiver.payloads()] == [
        (mine, sim.user_id),
        (theirs, "CD5678"),
    ]


def test_postbacks_can_come_labelled_as_a_form_with_the_same_json_body(
    sim: KiteSimulator, receiver: PostbackReceiver
) -> None:
    sim.orders.configure(postback_url=receiver.url)
    sim.orders.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()})
    sim.orders.configure(postback_content_type="application/x-www-form-urlencoded")
    sim.orders.place("regular", {k: str(v) for k, v in LIMIT_ORDER.items()})

    assert [item.content_type for item in receiver.received] == [
        "application/json",
        "application/x-www-form-urlencoded",
    ]
    assert all(_verified(payload) for payload in receiver.payloads())
    with pytest.raises(ValueError, match="postback_content_type"):
        sim.orders.configure(postback_content_type="text/plain")


def test_a_scripted_day_spreads_over_the_users_given() -> None:
    book = OrderBook(api_key="k", api_secret="s", user_id="AB1234")
    day = trading_day(book, orders=20, seed=2, users=["AB1234", "CD5678"])
    mine, theirs = book.orders("AB1234"), book.orders("CD5678")
    assert mine
    assert theirs
    assert len(mine) + len(theirs) == len(day.order_ids) == 20
