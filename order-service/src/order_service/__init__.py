"""The order service: a Flask HTTP API that accepts orders and dispatches them to the `orders` queue."""

# The workers' metrics directory (order_service.metrics), made fresh by order_service.main for each
# start: here, so that neither imports the other (main patches the process for gevent).
METRICS_DIR_PREFIX = "order-service-metrics-"
