#!/bin/sh
# What the official redis image's entrypoint does with `redis-server ARGS`: own /data, drop to the redis user,
# and start without protected mode (that image compiles it off), so other containers on the network can connect.
set -eu
if [ "${1:-}" != redis-server ]; then exec "$@"; fi
shift
chown -R redis:redis .
exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
