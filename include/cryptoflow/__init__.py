"""cryptoflow: the domain package shared by the DAGs, Spark jobs, the CLI and the tests."""

__version__ = "0.1.0"
