#!/bin/sh
# Starts this pod's Sentinel, monitoring the primary the other Sentinels name (pod 0 on a first start). Sentinel
# rewrites its own file as it learns, so the file lives in an emptyDir and is made anew on each start.
set -eu
: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${REDIS_PASSWORD:?}"
domain="sitrep-redis-headless.$POD_NAMESPACE.svc.cluster.local"
self="$POD_NAME.$domain"
primary=""
for i in 0 1 2; do
  host="sitrep-redis-$i.$domain"
  [ "$host" = "$self" ] && continue
  answer=$(timeout 3 redis-cli -h "$host" -p 26379 --raw SENTINEL get-master-addr-by-name sitrep 2>/dev/null | head -n1 || true)
  if [ -n "$answer" ]; then primary=$answer && break; fi
done
if [ -z "$primary" ]; then primary="sitrep-redis-0.$domain"; fi
# Wait until the primary's name resolves (its pod may still be starting), as Sentinel needs it at start.
until getent hosts "$primary" >/dev/null 2>&1; do sleep 1; done

conf=/run/sentinel/sentinel.conf
cat >"$conf" <<CONF
port 26379
dir /run/sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
sentinel monitor sitrep $primary 6379 2
sentinel auth-pass sitrep $REDIS_PASSWORD
sentinel down-after-milliseconds sitrep 5000
sentinel failover-timeout sitrep 60000
sentinel parallel-syncs sitrep 1
CONF
exec redis-server "$conf" --sentinel
