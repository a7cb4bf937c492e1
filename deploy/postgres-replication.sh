#!/bin/sh
# Run by the postgres image when it creates its data directory: lets the
# compose file's standby connect for replication over the compose network,
# with the password. (The image's own rule, "host all all all", does not
# cover replication connections.)
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
