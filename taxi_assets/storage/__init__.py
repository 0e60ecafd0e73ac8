"""Where data lands: atomic files, the lake's files and versions, the local PostgreSQL. No Dagster."""
