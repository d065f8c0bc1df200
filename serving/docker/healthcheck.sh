#!/bin/bash
# Docker HEALTHCHECK: healthy when TF Serving's REST model-status route
# (GET /v1/models/<MODEL_NAME>) answers 200 with a version in state AVAILABLE.
# Uses bash's /dev/tcp because the tensorflow/serving image ships neither curl nor wget.
set -uo pipefail

host="${HEALTHCHECK_HOST:-127.0.0.1}"
port="${HEALTHCHECK_PORT:-8501}"
model="${MODEL_NAME:?MODEL_NAME is not set}"

exec 3<>"/dev/tcp/${host}/${port}" || exit 1
printf 'GET /v1/models/%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' \
  "${model}" "${host}" >&3
response="$(timeout 5 cat <&3)"
exec 3<&-

status_line="${response%%$'\r'*}"
if [[ ! "${status_line}" =~ ^HTTP/1\.[01]\ 200 ]]; then
  echo "unhealthy: ${status_line:-no response}" >&2
  exit 1
fi
if [[ "${response}" != *'"AVAILABLE"'* ]]; then
  echo "unhealthy: no version of ${model} is AVAILABLE" >&2
  exit 1
fi
exit 0
