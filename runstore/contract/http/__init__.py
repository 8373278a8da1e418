"""The run service's HTTP: :mod:`.client` (urllib3, in the base install) and :mod:`.server`
(werkzeug apps on waitress: the ``runservice`` extra)."""
