"""The runservice: runs and executor tasks in a store, the scheduler and its loops, its HTTP API."""

from runstore.extras import require

require("runservice", "the runservice", "hypercorn", "starlette")
