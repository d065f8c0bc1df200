#!/bin/sh
# TF_CONFIG for MultiWorkerMirroredStrategy from the Indexed Job's completion index, then
# `keras-vit train --strategy multi_worker` with the container's arguments.
#
# Worker i is the pod $JOB_NAME-i, reachable as $JOB_NAME-i.$SERVICE_NAME through the
# headless Service (the pod's subdomain). Worker 0 is the chief: it alone writes the
# model directory. Every worker must list the same cluster, in index order.
set -eu
: "${JOB_COMPLETION_INDEX:?set by an Indexed Job}"
: "${JOB_NAME:?}" "${SERVICE_NAME:?}" "${WORKERS:?}" "${WORKER_PORT:=2222}"
workers=""
i=0
while [ "$i" -lt "$WORKERS" ]; do
  workers="${workers:+$workers,}\"$JOB_NAME-$i.$SERVICE_NAME:$WORKER_PORT\""
  i=$((i + 1))
done
TF_CONFIG="{\"cluster\":{\"worker\":[$workers]},\"task\":{\"type\":\"worker\",\"index\":$JOB_COMPLETION_INDEX}}"
export TF_CONFIG
exec keras-vit train --strategy multi_worker "$@"
