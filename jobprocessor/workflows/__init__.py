"""Light workflows: jobs that wait for other jobs, batch completion callbacks, resumable steps, singleton keys.

    plan.py    what a request's workflow fields mean (pure: references, their order, the callback)
    write.py   the enqueue transaction for jobs with workflow fields (locks, edges, settle, singleton, debounce)
    steps.py   job.step(name, fn): a step's JSON result stored as it finishes, returned on later runs
    graph.py   a job's parents, children, steps and callback, for GET /jobs/<id>

What happens when a parent ends lives in PostgreSQL (sql/013_jobs_workflows_v1.sql): triggers on jobs resolve the
waiting children in the statement that ends the parent, whatever ends it.
"""
