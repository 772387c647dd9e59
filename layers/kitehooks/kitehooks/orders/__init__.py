"""Order updates after verification: the order-updates queue."""
