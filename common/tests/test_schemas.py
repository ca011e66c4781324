from decimal import Decimal

import pytest

from common_tasks.schemas import MAX_ITEMS, OrderRequest, ProcessOrder, SendOrderConfirmation
from common_tasks.tasks import PROCESS_ORDER, SEND_ORDER_CONFIRMATION, ContractViolation

ORDER_ID = "0" * 32


def item(**overrides: object) -> dict[str, object]:
    return {"sku": "SKU-1", "quantity": 1, "unit_price": "1.00", **overrides}


def test_total_is_exact_decimal_arithmetic() -> None:
    order = OrderRequest.model_validate(
        {"customer_email": "a@example.com", "items": [item(quantity=3, unit_price="0.10"), item(unit_price=2)]}
    )
    assert order.total() == Decimal("2.30")


@pytest.mark.parametrize(
    "bad_item",
    [
        item(quantity=0),
        item(quantity=-1),
        item(quantity=10_001),
        item(quantity="2"),
        item(quantity=True),
        item(quantity=1.5),
        item(unit_price="-0.01"),
        item(unit_price="1.001"),
        item(unit_price="NaN"),
        item(unit_price="1e9"),
        item(sku=""),
        item(sku="x" * 65),
        item(sku="bad sku"),
        item(colour="red"),
    ],
)
def test_invalid_items_are_rejected(bad_item: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OrderRequest.model_validate({"customer_email": "a@example.com", "items": [bad_item]})


@pytest.mark.parametrize(
    "body",
    [
        {"customer_email": "not-an-email", "items": [item()]},
        {"customer_email": "a@example.com", "items": []},
        {"customer_email": "a@example.com", "items": [item()] * (MAX_ITEMS + 1)},
        {"customer_email": "a@example.com", "items": [item()], "coupon": "FREE"},
        {"items": [item()]},
    ],
)
def test_invalid_orders_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OrderRequest.model_validate(body)


def test_contract_round_trips_through_json() -> None:
    message = ProcessOrder(order_id=ORDER_ID, customer_email="a@example.com", items=[item()])
    wire = message.model_dump(mode="json")
    assert wire["contract_version"] == 1
    assert wire["items"][0]["unit_price"] == "1.00"
    assert PROCESS_ORDER.parse(wire) == message


@pytest.mark.parametrize(
    "change",
    [{"contract_version": 2}, {"order_id": "../etc"}, {"surprise": True}, {"total": "-1"}],
)
def test_contract_violations_are_one_line(change: dict[str, object]) -> None:
    wire = SendOrderConfirmation(order_id=ORDER_ID, customer_email="a@example.com", total="3.00").model_dump(
        mode="json"
    )
    with pytest.raises(ContractViolation) as violation:
        SEND_ORDER_CONFIRMATION.parse({**wire, **change})
    assert "\n" not in str(violation.value)
    assert str(violation.value).startswith("notifications.send_order_confirmation payload rejected")
