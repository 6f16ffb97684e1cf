from tests.conftest import AUTH, fetch_jobs


def test_enqueue_then_process_over_http(client):
    response = client.post("/jobs", json={"type": "test.echo", "payload": {"a": 1}, "store_id": "s1"}, headers=AUTH)
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    summary = client.post("/process-pending", headers=AUTH).json
    assert summary["claimed"] == 1 and summary["succeeded"] == 1 and summary["stores"] == {"s1": 1}
    job = client.get(f"/jobs/{job_id}", headers=AUTH).json
    assert job["status"] == "completed"
    assert job["result"] == {"payload": {"a": 1}, "store_id": "s1", "attempts": 1}


def test_nothing_due(client, engine):
    summary = client.post("/process-pending", headers=AUTH).json
    assert summary["claimed"] == 0 and summary["message"] == "No pending jobs"
    assert fetch_jobs(engine) == []
