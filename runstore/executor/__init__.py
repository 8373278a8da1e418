"""The executor: runs the tasks a runservice assigns it and serves their files.

It runs untrusted build code, so it holds no store credentials and never imports objstore
or the run store (``tests/test_import_rules.py``); it shares only ``runstore.contract``
with the runservice.
"""

from runstore.extras import require

require("runservice", "the executor", "hypercorn", "starlette")
