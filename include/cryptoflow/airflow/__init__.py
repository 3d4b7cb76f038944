"""cryptoflow's Airflow pieces, importable like a provider's: hooks, operators and the task bodies
the DAGs in dags/ call. Airflow is imported only by these modules, never by this package's
__init__, so the rest of cryptoflow (the Spark job, the CLI) runs without it."""
