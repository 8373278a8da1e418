"""The run service: documents, codec and errors shared by the runservice and the executor."""
