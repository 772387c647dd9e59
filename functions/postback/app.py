"""POST /postback: Kite's order postbacks. Verify the checksum, then enqueue to SQS FIFO."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

from kitehooks import aws, config
from kitehooks.deadline import Deadline
from kitehooks.http import (
    BodyNotDecodable,
    HttpApiEvent,
    HttpApiResponse,
    json_response,
    raw_body,
    received_at,
    request_id,
    request_method,
)
from kitehooks.postbacks import log_lines as postback_lines
from kitehooks.postbacks import receiver

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
postback_lines.use_postback_log_lines(logger)
metrics = Metrics()
aws.sqs_client()  # made during init, once per container
if config.order_ledger_table():
    aws.dynamodb_client()  # OrderConfirmation=on: the one ledger write per postback

# The answer, its log line and its metrics leave this long before Lambda's Timeout at the latest.
ANSWER_MARGIN_SECONDS = 2.5


# Neither @logger.inject_lambda_context nor @metrics.log_metrics, on purpose (see postbacks/log_lines):
# each line carries the API Gateway request id as correlation_id itself, the accepted and rejected
# lines carry their own metric, and only the rarer outcomes leave metrics to flush here.
def handler(event: HttpApiEvent, context: LambdaContext) -> HttpApiResponse:
    postback_lines.start_invocation()
    try:
        return _answer(event, context)
    finally:
        if metrics.metric_set:
            metrics.flush_metrics()


def _answer(event: HttpApiEvent, context: LambdaContext) -> HttpApiResponse:
    if request_method(event) != "POST":
        postback_lines.count_rejection("wrong_method", 405, {"correlation_id": request_id(event)})
        return json_response(405, {"status": "rejected", "reason": "use POST"}, headers={"Allow": "POST"})
    try:
        body = raw_body(event)
    except BodyNotDecodable as error:
        postback_lines.count_rejection("invalid_base64", 400, {"correlation_id": request_id(event)})
        return json_response(400, {"status": "rejected", "reason": str(error)})
    deadline = Deadline.from_context(context, ANSWER_MARGIN_SECONDS)
    outcome = receiver.receive(body, request_id(event), deadline, received_at(event))
    return json_response(outcome.status_code, outcome.body)
