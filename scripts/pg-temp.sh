# pg-temp.sh — sourced: `start_pg` runs a throwaway PostgreSQL cluster on this box
# (fsync and synchronous_commit on: as durable as SQLite's synchronous=FULL) with a
# database `bench`, exports DATABASE_URL for it, and stops and removes it on EXIT.
# Needs the server binaries (PG_BINDIR, default /usr/lib/postgresql/15/bin) and root
# (the cluster runs as the postgres user).
start_pg() {
  PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
  [[ -x $PG_BINDIR/initdb ]] || { echo "no PostgreSQL in $PG_BINDIR (apt-get install postgresql)" >&2; exit 69; }
  [[ $(id -u) == 0 ]] || { echo "run as root: the cluster runs as the postgres user" >&2; exit 77; }
  pg_dir=$(mktemp -d /tmp/pg-temp.XXXXXX)
  chmod 0711 "$pg_dir" && chown postgres: "$pg_dir"
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  trap stop_pg EXIT
  runuser -u postgres -- "$PG_BINDIR/initdb" -D "$pg_dir/data" -U postgres --auth-local=trust \
    --auth-host=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  runuser -u postgres -- "$PG_BINDIR/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w \
    -o "-k $pg_dir -c listen_addresses=127.0.0.1 -p $pg_port -c shared_buffers=256MB -c max_connections=200" \
    start >/dev/null
  runuser -u postgres -- "$PG_BINDIR/psql" -X -q -h "$pg_dir" -p "$pg_port" -d postgres \
    -c 'CREATE DATABASE bench' >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/bench?sslmode=disable"
  echo "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port" >&2
}

stop_pg() {
  [[ -n ${pg_dir:-} ]] || return 0
  runuser -u postgres -- "$PG_BINDIR/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
  pg_dir=""
}
