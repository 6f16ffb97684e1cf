"""The replay record (table trigger_replays, sql/070_trigger_replays_v1.sql), shared by every process and instance:
a signed trigger is admitted only if its QStash jti or HMAC signature is not already there.

Called only after the signature verified, so guesses never reach PostgreSQL. An entry is kept while the same
credential could still verify (its valid_until) plus MARGIN_S for clocks that disagree between instances and the
database; each write first deletes at most PRUNE_BATCH entries past that, so the table stays as small as the
triggers of the last few minutes and the clean-up never costs more than one short statement.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

MARGIN_S = 60.0
PRUNE_BATCH = 100

PRUNE = text("""
DELETE FROM trigger_replays
WHERE (method, key) IN (SELECT method, key FROM trigger_replays WHERE expires_at < now()
                        ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED)
""")

# a row for this credential that is still there but past its time counts as absent (the prune may not have
# reached it yet); a concurrent first use of the same credential waits on the unique key and then finds it
REMEMBER = text("""
INSERT INTO trigger_replays (method, key, expires_at)
VALUES (:method, :key, to_timestamp(:expires_at))
ON CONFLICT (method, key) DO UPDATE SET expires_at = EXCLUDED.expires_at
WHERE trigger_replays.expires_at < now()
RETURNING true
""")


def remember(engine: Engine, method: str, key: str, valid_until: float) -> bool:
    """True the first time this credential is seen (now remembered); False when it was seen before."""
    with engine.begin() as conn:
        conn.execute(PRUNE, {"batch": PRUNE_BATCH})
        first = conn.execute(REMEMBER, {"method": method, "key": key,
                                        "expires_at": valid_until + MARGIN_S}).first()
    return first is not None
