"""kitehooks: the shared layer of the Kite Connect login and postback functions.

Every rule about Kite lives here once; the handlers in ``functions/`` only wire events to it.
Modules are small and import lazily what they need, so a function pays at cold start only for
what it uses (the postback path never imports ``requests`` or pydantic).
"""

import logging as _logging

# With LogLevel=DEBUG, Lambda sets the root logger to DEBUG, and these libraries then log request
# and response bodies and URLs: the api_secret, access tokens, query strings. Their DEBUG output is
# never worth that, so they stay at INFO whatever the function's level.
for _library in ("botocore", "boto3", "s3transfer", "urllib3", "requests"):
    _logging.getLogger(_library).setLevel(_logging.INFO)
