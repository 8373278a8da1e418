"""runstore: the data layer of a CI run service, built on objstore (work in progress)."""

__all__: list[str] = []
