"""The run service's HTTP: :mod:`.client` (urllib3, in the base install) and :mod:`.server`
(ASGI apps on hypercorn, with starlette's requests and answers: the ``runservice`` extra)."""
