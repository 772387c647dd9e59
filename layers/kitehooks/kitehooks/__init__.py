"""kitehooks: the shared layer of the Kite Connect login and postback functions.

Every rule about Kite lives here once; the handlers in ``functions/`` only wire events to it.
Modules are small and import lazily what they need, so a function pays at cold start only for
what it uses (the postback path never imports ``requests`` or pydantic).
"""
