"""Order postbacks: parse and verify, enqueue, park what cannot be sent, and redrive it later."""
