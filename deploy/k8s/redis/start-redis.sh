#!/bin/sh
# Starts this pod's Redis: as the primary when the Sentinels name this pod (or, on a first start with no Sentinel
# answering, when this is pod 0), else as a replica of the primary they name.
set -eu
: "${POD_NAME:?}" "${POD_NAMESPACE:?}" "${REDIS_PASSWORD:?}"
domain="sitrep-redis-headless.$POD_NAMESPACE.svc.cluster.local"
self="$POD_NAME.$domain"
primary=""
for i in 0 1 2; do
  host="sitrep-redis-$i.$domain"
  answer=$(timeout 3 env -u REDISCLI_AUTH redis-cli -h "$host" -p 26379 --raw SENTINEL get-master-addr-by-name sitrep 2>/dev/null | head -n1 || true)
  if [ -n "$answer" ]; then primary=$answer && break; fi
done
if [ -z "$primary" ]; then primary="sitrep-redis-0.$domain"; fi

conf=/run/redis/redis.conf
{
  echo "include /config/redis.conf"
  echo "dir /data"
  echo "port 6379"
  echo "requirepass \"$REDIS_PASSWORD\""
  echo "masterauth \"$REDIS_PASSWORD\""
  # Replicas and Sentinels know each other by their stable DNS names, not by pod IPs that change.
  echo "replica-announce-ip $self"
  # A primary cut off from every replica stops taking writes after 10 s, so a failover elsewhere loses at most
  # that window of acknowledged reports (sitrep answers UNAVAILABLE meanwhile and its feeds retry).
  echo "min-replicas-to-write 1"
  echo "min-replicas-max-lag 10"
  if [ "$primary" != "$self" ]; then echo "replicaof $primary 6379"; fi
} >"$conf"
exec redis-server "$conf"
