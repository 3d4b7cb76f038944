"""The PostgreSQL warehouse: schema migrations and connections."""
