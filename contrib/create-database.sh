#!/usr/bin/env bash
# Creates the production PostgreSQL role and database for taler-otp.
# Run as a user that can become the PostgreSQL superuser (root or postgres):
#   contrib/create-database.sh [ROLE] [DATABASE]
# The role authenticates by peer authentication over the local socket, so the
# service's system user must have the same name (default taler-otp).
# Afterwards: CONFIG = postgres:///DATABASE in [merchantdb-postgres], then `taler-otp dbinit`.
set -euo pipefail
role=${1:-taler-otp}
database=${2:-taler-otp}
case "$role$database" in *[!A-Za-z0-9_-]*) echo "role and database may use A-Z a-z 0-9 _ - only" >&2; exit 2;; esac

psql_su() {
  if [ "$(id -un)" = postgres ]; then psql -v ON_ERROR_STOP=1 -qAt "$@"; else runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"; fi
}

if ! id "$role" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  useradd --system --home-dir /var/lib/taler-otp --shell /usr/sbin/nologin "$role"
fi
if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = '$role'")" != 1 ]; then
  psql_su -c "CREATE ROLE \"$role\" LOGIN"
fi
if [ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
  psql_su -c "CREATE DATABASE \"$database\" OWNER \"$role\" ENCODING 'UTF8' TEMPLATE template0"
fi
echo "database $database owned by role $role is ready; set CONFIG = postgres:///$database and run taler-otp dbinit"
