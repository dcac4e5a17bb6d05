"""The run store: every run's command, config, input fingerprints, metrics and artifacts.

An embedded SQLite database in WAL mode (``runs.sqlite``) holds one row per run; an
``artifacts/<run id>/`` folder beside it holds the run's files. Many processes may
write at once; artifacts appear atomically; a run whose process was killed is marked
failed the next time the store is opened. See docs/store.md.
"""

from fleetlab.store._demo import tour_demo
from fleetlab.store._fingerprint import fingerprint
from fleetlab.store._home import default_store_path, fleetlab_home
from fleetlab.store._records import InputRef, RunRecord
from fleetlab.store._store import Run, RunStore, new_run_id

__all__ = [
    "InputRef",
    "Run",
    "RunRecord",
    "RunStore",
    "default_store_path",
    "fingerprint",
    "fleetlab_home",
    "new_run_id",
    "tour_demo",
]
