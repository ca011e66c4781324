"""The order records in Redis, owned by the orders side: order-service creates them, the worker
moves them on. notification-service never touches them (it has its own delivery ledger)."""

from order_store.store import Completion, OrderRecord, OrderStore

__all__ = ["Completion", "OrderRecord", "OrderStore"]
