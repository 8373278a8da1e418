"""The HTTP routes of the runservice and of the executor, each declared once.

A server matches requests against its table (``http.server.routing.rules_of``); its client, and
the tests, build every path from the same :class:`Route` (:meth:`Route.path`), so no
module writes a URL path by hand. In a table, a route's attribute name is the name of
the server's handler for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import attrs

from runstore.contract.auth import Role

_PLACEHOLDER = re.compile(r"<(\w+)>")


@attrs.frozen
class Route:
    """One route: an HTTP method, a path template whose placeholders are whole segments
    (``/runs/<run_id>``), and the role whose token it takes (None: open to anyone)."""

    method: str
    template: str
    role: Role | None

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the template's placeholders, in order."""
        return tuple(_PLACEHOLDER.findall(self.template))

    def path(self, **values: str | int) -> str:
        """The template with each placeholder replaced by its value, percent-encoded whole.

        ``TypeError`` unless ``values`` names exactly the placeholders. A value may hold any
        character ("/" and ".." included): it always stays one path segment.
        """
        if set(values) != set(self.names):
            raise TypeError(f"{self.template} takes {list(self.names)}, not {sorted(values)}")
        return _PLACEHOLDER.sub(lambda match: quote(str(values[match[1]]), safe=""), self.template)


class RunServiceRoutes:
    """The runservice's API: for executors, then for clients (see docs/runservice.md)."""

    put_executor = Route("PUT", "/api/v1/executors/<executor_id>", Role.EXECUTOR)
    delete_executor = Route("DELETE", "/api/v1/executors/<executor_id>", Role.CLIENT)
    executor_tasks = Route("GET", "/api/v1/executors/<executor_id>/tasks", Role.EXECUTOR)
    task_status = Route("PUT", "/api/v1/executortasks/<task_id>/status", Role.EXECUTOR)
    archive = Route("GET", "/api/v1/workspacearchives/<task_id>/<step>", Role.EXECUTOR)
    restore_cache = Route("GET", "/api/v1/caches", Role.EXECUTOR)
    save_cache = Route("PUT", "/api/v1/caches", Role.EXECUTOR)
    create_run = Route("POST", "/api/v1/runs", Role.CLIENT)
    list_runs = Route("GET", "/api/v1/runs", Role.CLIENT)
    get_run = Route("GET", "/api/v1/runs/<run_id>", Role.CLIENT)
    delete_run = Route("DELETE", "/api/v1/runs/<run_id>", Role.CLIENT)
    restart_run = Route("POST", "/api/v1/runs/<run_id>/restart", Role.CLIENT)
    cancel_run = Route("POST", "/api/v1/runs/<run_id>/cancel", Role.CLIENT)
    run_log = Route("GET", "/api/v1/runs/<run_id>/tasks/<task_name>/logs/<step>", Role.CLIENT)
    collect = Route("POST", "/api/v1/gc", Role.CLIENT)
    list_caches = Route("GET", "/api/v1/cachegroups", Role.CLIENT)
    delete_caches = Route("DELETE", "/api/v1/cachegroups", Role.CLIENT)
    health = Route("GET", "/healthz", None)


class ExecutorRoutes:
    """The executor's API, for the runservice: its tasks' logs (as far as written) and archives."""

    log = Route("GET", "/api/v1/tasks/<task_id>/logs/<step>", Role.RUNSERVICE)
    archive = Route("GET", "/api/v1/tasks/<task_id>/archives/<step>", Role.RUNSERVICE)


def routes_of(table: type) -> Iterator[tuple[str, Route]]:
    """Each route of a table with its attribute name, in declaration order."""
    for name, value in vars(table).items():
        if isinstance(value, Route):
            yield name, value
