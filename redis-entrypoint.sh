#!/bin/sh
# How every Redis data node of docker-compose.yml starts (the default, replicated and cluster
# profiles alike): with the ACL users of users.acl, written at each start from the passwords in
# the environment, so that no password is on a command line or in an image.
#   kvql    the API's least-privileged user (users.acl's rules, KVQL_REDIS_PASSWORD)
#   admin   every right (REDIS_ADMIN_PASSWORD): operators' redis-cli, replication links between
#           the nodes (masteruser), the sentinels (sentinel auth-user), redis-cli --cluster
#   default off, yet with every permission: Redis 7.0 replays the AOF as the default user and
#           checks its ACL inside MULTI/EXEC, so with `-@all` every script's writes (kvql writes
#           only through scripts) would be dropped at the next start, silently
#           (redis/redis#14541). Off, nobody can sign in as it.
# Usage: sh redis-entrypoint.sh [redis-server options...], e.g. --include replication.conf
# --replicaof redis-primary 6379. The paths default to the containers' and can be set for a run
# outside Docker (test/server/redisEntrypoint.test.ts): REDIS_DATA_DIR (/data), KVQL_ACL_TEMPLATE
# (/etc/kvql/users.acl), REDIS_CONF (/usr/local/etc/redis/redis.conf).
set -eu
: "${KVQL_REDIS_PASSWORD:?set KVQL_REDIS_PASSWORD (e.g. openssl rand -hex 24)}"
: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD (e.g. openssl rand -hex 24)}"
# The admin password is written into a config line (masterauth): keep it to characters that
# need no quoting there.
case "$REDIS_ADMIN_PASSWORD" in
  *[!A-Za-z0-9_-]*) echo "REDIS_ADMIN_PASSWORD: use letters, digits, _ and - only (e.g. openssl rand -hex 24)" >&2; exit 2 ;;
esac
DATA=${REDIS_DATA_DIR:-/data}
TEMPLATE=${KVQL_ACL_TEMPLATE:-/etc/kvql/users.acl}
CONF=${REDIS_CONF:-/usr/local/etc/redis/redis.conf}
umask 077
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
grep '^user kvql ' "$TEMPLATE" | sed "s/#PASSWORD_SHA256/#$(sha "$KVQL_REDIS_PASSWORD")/" > "$DATA/users.acl"
printf 'user default off resetpass ~* &* +@all\nuser admin on #%s ~* &* +@all\n' "$(sha "$REDIS_ADMIN_PASSWORD")" >> "$DATA/users.acl"
# A replica (and a primary, once a failover demotes it) signs in to its primary as admin.
printf 'masteruser admin\nmasterauth %s\n' "$REDIS_ADMIN_PASSWORD" > "$DATA/auth.conf"
exec redis-server "$CONF" --aclfile "$DATA/users.acl" --include "$DATA/auth.conf" "$@"
