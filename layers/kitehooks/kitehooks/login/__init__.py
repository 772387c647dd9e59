"""The login redirect: start a login, check its state, exchange the request_token, the pages."""
