"""Superset dashboards as code: the bundle's definition (datasets.py with the queries of sql/,
charts.py, dashboards.py; bundle.py turns them into YAML) and its import (importer.py).

This package runs in two interpreters: the Airflow venv of the local stack and Superset's own
image in docker-compose (`cryptoflow superset import`). It needs only the standard library,
PyYAML and requests, which both have.
"""
