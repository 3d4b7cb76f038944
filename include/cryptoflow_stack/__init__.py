"""The one-machine stack: a private PostgreSQL cluster, Airflow and Superset on loopback.

Everything here is started and stopped by `cryptoflow up` / `cryptoflow down`, keeps its files
under the state directory, and is what the integration tests start for real.
"""
