#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the PostgreSQL store.
#
#   eval "$(bash .ci/postgres.sh start)"   # starts one; prints the exports:
#       KEYWARD_TEST_POSTGRES_URL=postgres://keyward@127.0.0.1:PORT/keyward
#       KEYWARD_TEST_POSTGRES_DIR=/tmp/keyward-pg.XXXXXX (for stop)
#   bash .ci/postgres.sh stop "$KEYWARD_TEST_POSTGRES_DIR"
#
# Debian's `postgresql` package (installed here if missing and run as root).
# The cluster lives in a new temporary directory, listens on 127.0.0.1 and a
# Unix socket in that directory, on a free port, with trust authentication
# for the local user `keyward`: for tests only. initdb refuses to run as root,
# so as root the cluster runs as the package's `postgres` user.
set -euo pipefail

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  start)
    bin=$(find_bin)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
      if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(find_bin)
      else
        echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
        exit 1
      fi
    fi
    dir=$(mktemp -d /tmp/keyward-pg.XXXXXX)
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U keyward --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >&2 || {
      cat "$dir/server.log" >&2
      exit 1
    }
    echo "$port" >"$dir/port"
    as_owner "$bin/createdb" -h "$dir" -p "$port" -U keyward keyward
    echo "export KEYWARD_TEST_POSTGRES_URL=postgres://keyward@127.0.0.1:$port/keyward"
    echo "export KEYWARD_TEST_POSTGRES_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bin=$(find_bin)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    case "$dir" in
      /tmp/keyward-pg.*) rm -rf "$dir" ;;
    esac
    ;;
  stop-server)
    # Stops the server of DIR, keeping its data (an outage; see start-server).
    dir=${2:?usage: postgres.sh stop-server DIR}
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >&2
    ;;
  start-server)
    # Starts the server of DIR again, on its port, after stop-server.
    dir=${2:?usage: postgres.sh start-server DIR}
    port=$(cat "$dir/port")
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >&2
    ;;
  *)
    echo "usage: $0 start | stop DIR | stop-server DIR | start-server DIR" >&2
    exit 2
    ;;
esac
