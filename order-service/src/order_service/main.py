"""Console script `order-service`: serves the API with gunicorn (`order-service healthcheck` probes it).

Imported only by the console script (and bench/bare_flask.py): it patches the process for gevent.
"""

from __future__ import annotations

# gunicorn's gevent workers cooperate only with what gevent patched before it was imported: patch
# first (as gevent's documentation asks), before this module or gunicorn imports ssl or socket. The
# patched master serves as before; in-process code (tests, tools) never imports this module.
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any  # noqa: E402

# gunicorn parses WEB_CONCURRENCY itself when it is imported; compose passes the variable empty
# when it is not set, which the settings treat as unset, but int("") would stop gunicorn.
if os.environ.get("WEB_CONCURRENCY") == "":
    del os.environ["WEB_CONCURRENCY"]

from gunicorn import glogging  # noqa: E402
from gunicorn.app.base import BaseApplication  # noqa: E402

from common_tasks.config import load_settings  # noqa: E402
from common_tasks.logs import configure_logging  # noqa: E402
from order_service import METRICS_DIR_PREFIX  # noqa: E402
from order_service.settings import OrderServiceSettings  # noqa: E402

USAGE = "usage: order-service [healthcheck | check-config]"
# The access log line (WEB_ACCESS_LOG=true): client, request line, status, bytes, milliseconds and
# the request id the response carries, so it greps together with the request's other lines.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


def service_logger_class(handler: logging.Handler) -> type[glogging.Logger]:
    """gunicorn's logger, writing its error and access logs through the service's one handler."""

    class ServiceLogger(glogging.Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                log.handlers = [handler]

    return ServiceLogger


class OrderServiceServer(BaseApplication):
    """gunicorn configured from OrderServiceSettings, loading the Flask app factory in each worker."""

    def __init__(self, settings: OrderServiceSettings) -> None:
        self.settings = settings
        self.log_handler = configure_logging("order-service", settings.LOG_LEVEL, settings.LOG_FORMAT)
        if not settings.api_keys:
            logging.getLogger("order_service").warning(
                "ORDER_API_KEYS is empty: anyone who reaches %s:%s may place and read orders (loopback only)",
                settings.HOST,
                settings.PORT,
            )
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options: dict[str, Any] = {
            "bind": [f"{settings.HOST}:{settings.PORT}"],
            "workers": settings.WEB_CONCURRENCY,
            # gevent: each connection is a greenlet, so a client that sends its request slowly
            # waits alone (gunicorn's documented answer to slow clients, besides a buffering proxy).
            "worker_class": "gevent",
            "worker_connections": settings.WEB_CONNECTIONS,
            "timeout": settings.WEB_TIMEOUT,
            "graceful_timeout": settings.WEB_GRACEFUL_TIMEOUT,
            "loglevel": settings.LOG_LEVEL.lower(),
            "errorlog": "-",
            "accesslog": "-" if settings.WEB_ACCESS_LOG else None,
            "access_log_format": ACCESS_LOG_FORMAT,
            "logger_class": service_logger_class(self.log_handler),
            "proc_name": "order-service",
            # Never trust forwarded headers unless a proxy is configured in front.
            "forwarded_allow_ips": "127.0.0.1",
        }
        # gunicorn >= 24 opens a control socket under $HOME; the images have no writable home.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        # Prometheus' multiprocess mode (order_service.metrics), imported after main() chose its directory.
        from order_service import metrics

        options.update(child_exit=metrics.child_exit, on_exit=metrics.on_exit)
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from order_service.app import create_app

        return create_app(self.settings)


def healthcheck(settings: OrderServiceSettings) -> int:
    url = f"http://127.0.0.1:{settings.PORT}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}")
        return 1
    print(f"{'healthy' if healthy else 'unhealthy'}: {url}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(OrderServiceSettings)
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["healthcheck"]:
        sys.exit(healthcheck(settings))
    if arguments == ["check-config"]:
        sys.exit(0)
    if arguments:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    # A fresh directory for the workers' metrics (order_service.metrics), set before anything imports
    # prometheus_client, which reads it at import; the workers inherit it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    OrderServiceServer(settings).run()


if __name__ == "__main__":
    main()
