"""The order store's one setting, shared by the services that own orders (order-service, worker)."""

from __future__ import annotations

from pydantic import ValidationInfo, field_validator

from common_tasks.config import CommonSettings, check_redis_url


class OrderStoreSettings(CommonSettings):
    # Orders live in Redis; by default in the broker's database, under the `order:` prefix.
    ORDER_STORE_URL: str | None = None

    @field_validator("ORDER_STORE_URL")
    @classmethod
    def _order_store_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return check_redis_url(value, info)

    @property
    def order_store_url(self) -> str:
        return self.ORDER_STORE_URL or self.CELERY_BROKER_URL
