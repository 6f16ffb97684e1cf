"""The dashboard shows workflows (issue 16), through Flask's test client against a real PostgreSQL: a job's chain on
its page (parents, children, steps, the batch it is the on_complete job of), the waiting status in the job list's
filter and in the batches' counts, and the cancel button of a waiting job."""
from __future__ import annotations

from sqlalchemy import text

from tests.support.settings import AUTH


def post(client, body):
    response = client.post("/jobs", json=body, headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json


def test_a_jobs_page_shows_its_chain_and_waiting_jobs_are_listed(dash, operator, engine):
    api = dash.test_client()
    body = post(api, {"jobs": [{"type": "wf.stage", "batch_id": "wf-b1", "payload": {"stage": "import"}},
                               {"type": "wf.stage", "batch_id": "wf-b1", "depends_on": [{"index": 0}],
                                "payload": {"stage": "translate"}}],
                      "on_complete": {"type": "wf.stage", "payload": {"stage": "notify"}}})
    parent, child = body["ids"]
    callback = body["on_complete"]["id"]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job_steps (job_id, name, result) VALUES (:id, 'translate-fr', "
                          "'{\"words\": 120}')"), {"id": parent})

    page = operator.get(f"/dashboard/jobs/{parent}").get_data(as_text=True)
    children = page.split('id="children"')[1].split("</ul>")[0]
    assert f'href="/dashboard/jobs/{child}"' in children and f'href="/dashboard/jobs/{callback}"' in children
    steps = page.split('id="steps"')[1].split("</table>")[0]
    assert "translate-fr" in steps and "&#34;words&#34;: 120" in steps

    page = operator.get(f"/dashboard/jobs/{child}").get_data(as_text=True)
    parents = page.split('id="parents"')[1].split("</ul>")[0]
    assert f'href="/dashboard/jobs/{parent}"' in parents and 'badge pending' in parents
    assert "Waits for 1 of 1 parents" in page and 'id="cancel-job"' in page

    page = operator.get(f"/dashboard/jobs/{callback}").get_data(as_text=True)
    assert 'id="on-complete-of"' in page and "wf-b1" in page and "Parents (2)" in page

    listed = operator.get("/dashboard/jobs?status=waiting").get_data(as_text=True)
    assert f'href="/dashboard/jobs/{child}"' in listed and f'href="/dashboard/jobs/{parent}"' not in listed
    everything = operator.get("/dashboard/jobs").get_data(as_text=True)
    assert all(f'href="/dashboard/jobs/{i}"' in everything for i in (parent, child, callback))
    assert operator.get("/dashboard/batches").status_code == 200  # a batch with a waiting job
