#!/bin/sh
# Airflow's metadata database beside the hub's (run once by the postgres image on an empty
# volume, as the POSTGRES_USER).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE airflow OWNER \"$POSTGRES_USER\""
