"""The workflow plan of a request, without a database: references point backwards, batches come before the jobs
that wait for them, a job never waits for its own batch, an on_complete covers one batch; who has dependents."""
import pytest

from jobprocessor.workflows.plan import Links, PlanError, build


def row(batch_id=None, **links):
    out = {"type": "t", "batch_id": batch_id}
    if links:
        out["links"] = Links(**links)
    return out


def test_positions_batches_and_dependents():
    plan = build([row(), row("b", parent_positions=(0,)), row("b", parent_positions=(0,)),
                  row(batch="b", parent_ids=(7,)), row(parent_positions=(3, 1))])
    assert plan.positions == [(), (0,), (0,), (1, 2), (1, 3)]
    assert plan.has_dependents == [True, True, True, True, False]
    assert plan.parent_ids == {7} and plan.batches == {"b": [3]} and plan.callback is None


def test_a_callback_waits_for_every_job_of_its_batch():
    plan = build([row("b"), row("b")], callback={"type": "t"})
    assert plan.callback == 2 and plan.callback_batch == "b" and plan.positions[2] == (0, 1)
    assert plan.has_dependents == [True, True, False] and plan.batches == {"b": [2]}


@pytest.mark.parametrize("rows,callback,index,code", [
    ([row(parent_positions=(0,))], None, 0, "invalid_reference"),
    ([row(parent_positions=(1,)), row()], None, 0, "invalid_reference"),
    ([row("b", batch="b")], None, 0, "invalid_reference"),
    ([row(batch="b"), row("b")], None, 1, "invalid_reference"),
    ([row("a"), row("b")], {"type": "t"}, None, "invalid_combination"),
    ([row(), row()], {"type": "t"}, None, "invalid_combination"),
])
def test_requests_that_cannot_be_honoured(rows, callback, index, code):
    with pytest.raises(PlanError) as raised:
        build(rows, callback)
    assert raised.value.index == index and raised.value.code == code and raised.value.message
