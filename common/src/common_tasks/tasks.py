"""Task contracts: the name, queue and payload schema of every task, and typed dispatch helpers.

Services never import each other; they send tasks by name through these contracts. Every task takes
one keyword argument, `payload`, a JSON object valid against the contract's schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from common_tasks.logs import correlation
from common_tasks.schemas import ProcessOrder, RecordNotification, SendOrderConfirmation

if TYPE_CHECKING:  # importing Celery costs ~1 s; the healthcheck probes import this module without it
    from celery import Celery

ORDERS_QUEUE = "orders"
NOTIFICATIONS_QUEUE = "notifications"
QUEUES = (ORDERS_QUEUE, NOTIFICATIONS_QUEUE)

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class ContractViolation(ValueError):
    """A task payload that does not match its contract; never worth a retry."""


@dataclass(frozen=True)
class TaskContract(Generic[PayloadT]):
    name: str
    queue: str
    schema: type[PayloadT]

    def parse(self, payload: Any) -> PayloadT:
        """Validate a received payload, raising ContractViolation with a one-line reason."""
        try:
            return self.schema.model_validate(payload)
        except ValidationError as error:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'payload'}: {item['msg']}" for item in error.errors()
            )
            raise ContractViolation(f"{self.name} payload rejected: {reasons}") from None


PROCESS_ORDER = TaskContract("orders.process", ORDERS_QUEUE, ProcessOrder)
RECORD_NOTIFICATION = TaskContract("orders.record_notification", ORDERS_QUEUE, RecordNotification)
SEND_ORDER_CONFIRMATION = TaskContract(
    "notifications.send_order_confirmation", NOTIFICATIONS_QUEUE, SendOrderConfirmation
)
CONTRACTS: tuple[TaskContract[Any], ...] = (PROCESS_ORDER, RECORD_NOTIFICATION, SEND_ORDER_CONFIRMATION)


def task_routes() -> dict[str, dict[str, str]]:
    return {contract.name: {"queue": contract.queue} for contract in CONTRACTS}


def dispatch(app: Celery, contract: TaskContract[PayloadT], payload: PayloadT) -> str:
    """Publish `payload` to the contract's queue and return the task id.

    The result is ignored on purpose: recording interest in a result touches the result backend,
    which blocks for ~19 s when Redis is down. State lives in the order store instead.
    The message's `argsrepr`/`kwargsrepr` headers (what monitoring tools show) name the order only:
    Celery's default repr of the whole payload costs ~10 % of a publish and copies e-mail
    addresses into every header. The `order_id` and `request_id` headers carry the correlation on
    to the task's log lines (common_tasks.logs).
    """
    if not isinstance(payload, contract.schema):
        raise TypeError(f"{contract.name} takes {contract.schema.__name__}, not {type(payload).__name__}")
    order_id = getattr(payload, "order_id", None)
    summary = f"{{'payload': <{contract.schema.__name__} order_id={order_id or '?'}>}}"
    headers = correlation()
    if order_id:
        headers["order_id"] = order_id
    result = app.send_task(
        contract.name,
        kwargs={"payload": payload.model_dump(mode="json")},
        queue=contract.queue,
        ignore_result=True,
        argsrepr="()",
        kwargsrepr=summary,
        headers=headers,
    )
    return result.id


def send_process_order(app: Celery, payload: ProcessOrder) -> str:
    return dispatch(app, PROCESS_ORDER, payload)


def send_order_confirmation(app: Celery, payload: SendOrderConfirmation) -> str:
    return dispatch(app, SEND_ORDER_CONFIRMATION, payload)


def send_record_notification(app: Celery, payload: RecordNotification) -> str:
    return dispatch(app, RECORD_NOTIFICATION, payload)
