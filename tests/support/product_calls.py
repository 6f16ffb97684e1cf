"""A /process-pending call through the Flask test client, as the product.optimize tests make it."""
from __future__ import annotations

from tests.support.settings import AUTH


def process(client, budget_s: float = 20, limit: int = 100) -> dict:
    response = client.post("/process-pending", json={"budget_s": budget_s, "limit": limit}, headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json
