"""POST /postback: Kite's order postbacks. Verify the checksum, then enqueue to SQS FIFO."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kitehooks import aws, receiver
from kitehooks.http import BodyNotDecodable, json_response, raw_body

logger = Logger()
metrics = Metrics()
app = APIGatewayHttpResolver()
aws.sqs_client()  # made during init, once per container


@app.post("/postback")
def postback() -> Response[str]:
    event = app.current_event
    try:
        body = raw_body(event.body, bool(event.is_base64_encoded))
    except BodyNotDecodable as error:
        receiver.count_rejection("invalid_base64")
        return json_response(400, {"status": "rejected", "reason": str(error)})
    outcome = receiver.receive(body, event.request_context.request_id)
    return json_response(outcome.status_code, outcome.body)


@app.route("/postback", method=["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
def wrong_method() -> Response[str]:
    receiver.count_rejection("wrong_method")
    return json_response(405, {"status": "rejected", "reason": "use POST"}, headers={"Allow": "POST"})


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]  # Powertools leaves it untyped
def unexpected(error: Exception) -> Response[str]:
    logger.exception("unexpected error")
    return json_response(500, {"status": "error", "reason": "internal error"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
