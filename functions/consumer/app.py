"""The example consumer of kitehooks' order updates: your own logic goes in ``handle_order_update``.

Deployed only with the template parameter ``ExampleConsumer=on``. Lambda reads the FIFO queue
``OrderUpdatesQueue`` in batches of up to ten; each message is one order state, read into an
:class:`~order_update.OrderUpdate` (see ``order_update.py`` for what each source sends and what
is signed). What the wiring below does for you:

- Order: one order's updates arrive in order (``MessageGroupId`` = order_id). When one fails, it
  and the later updates of the same order in the batch go back to the queue and are retried in
  order; other orders go on.
- Once: an order state is handled once even when it arrives twice (kitehooks sends each state
  once, but SQS deduplicates only within five minutes, and postback, redrive and reconciler can
  each carry a state). Handled states are remembered in a DynamoDB table (``IDEMPOTENCY_TABLE``).
- Failure: raise from ``handle_order_update`` and the message is retried after the queue's
  visibility timeout; after the queue's ``maxReceiveCount`` receives it moves to the dead-letter
  queue, whose alarm fires.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from kitehooks import aws
from kitehooks.config import ConfigurationError

# order_update.py sits next to this file: Lambda imports it from the function's folder, where the
# type checker, reading the whole project, knows it by its path.
if TYPE_CHECKING:
    from functions.consumer.order_update import MalformedOrderUpdate, OrderUpdate, parse_order_update
else:
    from order_update import MalformedOrderUpdate, OrderUpdate, parse_order_update

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


def handle_order_update(update: OrderUpdate) -> None:
    """Your logic, for one update of one order. Raise to have it retried (in order, after the
    queue's visibility timeout); return and it is done, and the same state is not handled again.

    ``update.source`` is ``postback``, ``redrive`` or ``reconciler``; ``update.status`` is the
    order book's status (``OPEN``, ``COMPLETE``, ``CANCELLED``, ``REJECTED``; Kite's ``UPDATE`` is
    ``OPEN`` with a new ``filled_quantity``); ``update.order`` is Kite's order object.
    """
    logger.info(
        "order update",
        extra={
            "source": update.source,
            "order_id": update.order_id,
            "user_id": update.user_id,
            "status": update.status,
            "filled_quantity": update.filled_quantity,
        },
    )


# --- Wiring: batches, order and "once". Nothing below needs changing for your own logic. -------

# How long a handled state is remembered. Orders are a day's business; a week also covers a
# redrive of postbacks parked over a long weekend. One small item per state, removed by TTL.
REMEMBER_HANDLED_SECONDS = 7 * 24 * 3600

_idempotency = IdempotencyConfig(expires_after_seconds=REMEMBER_HANDLED_SECONDS)
_handled_states = DynamoDBPersistenceLayer(
    table_name=os.environ.get("IDEMPOTENCY_TABLE", ""),
    boto3_client=aws.dynamodb_client(),  # bounded retries and timeouts, like kitehooks' own calls
)
# skip_group_on_error: a failed message fails only the later messages of its own order.
_processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# A batch whose every message failed is reported like any other rather than raised: the same
# messages go back to the queue either way, and a bad message is not a crash of the function.
_processor.raise_on_entire_batch_failure = False


def _handle_state(*, state_id: str, update: OrderUpdate) -> None:
    handle_order_update(update)


# The key is the order state, (order_id, status with UPDATE as OPEN, filled_quantity), hashed as
# the queue's own MessageDeduplicationId: the same for every source and whatever the body's bytes.
_handle_once: Callable[..., None] = idempotent_function(
    _handle_state,
    data_keyword_argument="state_id",
    persistence_store=_handled_states,
    config=_idempotency,
    key_prefix="order-state",
)


def _handle_record(record: SQSRecord) -> None:
    try:
        update = parse_order_update(record.raw_event)
    except MalformedOrderUpdate as error:
        # Never the body: a postback's carries its checksum.
        logger.error("order update unreadable", extra={"message_id": record.message_id, "reason": str(error)})
        raise
    try:
        _handle_once(state_id=update.state.deduplication_id, update=update)
    except Exception:
        logger.exception(
            "order update failed",
            extra={
                "message_id": update.message_id,
                "source": update.source,
                "order_id": update.order_id,
                "status": update.status,
                "filled_quantity": update.filled_quantity,
            },
        )
        raise


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    if not _handled_states.table_name:
        raise ConfigurationError("environment variable IDEMPOTENCY_TABLE is not set")
    _idempotency.register_lambda_context(context)  # an interrupted update may be retried after the timeout
    response = process_partial_response(
        event=event, record_handler=_handle_record, processor=_processor, context=context
    )
    if response["batchItemFailures"]:
        # Includes the later updates of a failed order, which were not tried.
        logger.warning(
            "order updates returned to the queue",
            extra={"count": len(response["batchItemFailures"]), "batch": len(event.get("Records", []))},
        )
    return response
