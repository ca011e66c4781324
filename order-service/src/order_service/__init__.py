"""The order service: a Flask HTTP API that accepts orders and dispatches them to the `orders` queue."""
