"""A valid order body for the API tests; each test changes what it needs."""

from __future__ import annotations

from typing import Any


def sample_order(quantity: int = 2, unit_price: str = "9.99") -> dict[str, Any]:
    return {
        "customer_email": "buyer@example.com",
        "items": [{"sku": "SKU-1", "quantity": quantity, "unit_price": unit_price}],
    }
