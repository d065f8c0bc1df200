#!/bin/bash
# Starts tensorflow_model_server (or our server, Dockerfile.keras-vit-serve) with this
# image's config files, and sizes TensorFlow's thread pools to the container's CPU quota.
#
# Why: TF Serving sizes its pools from the CPUs it can schedule on, which inside a
# container is every core of the host, not the `docker run --cpus` / Kubernetes CPU
# limit. On a 64-core node with a 4-CPU quota that means 64 intra-op threads fighting
# over 4 CPUs of quota: throttling and long tail latencies. Flags given on the command
# line always win; the Kubernetes manifests pass all of them explicitly.
set -euo pipefail

# The server command: TF Serving's binary, or ours in Dockerfile.keras-vit-serve
# ("python -m serving.server": words split on spaces).
read -r -a server <<<"${TF_SERVING_BINARY:-/usr/bin/tensorflow_model_server}"
config_dir="${TF_SERVING_CONFIG_DIR:-/etc/tfserving}"
cgroup_root="${CGROUP_ROOT:-/sys/fs/cgroup}"

# Prints the CPU quota in whole cores, rounded up; prints nothing without a quota.
cpu_quota_cores() {
  local quota period
  if [[ -r "${cgroup_root}/cpu.max" ]]; then  # cgroup v2: "<quota|max> <period>"
    read -r quota period <"${cgroup_root}/cpu.max"
  elif [[ -r "${cgroup_root}/cpu/cpu.cfs_quota_us" ]]; then  # cgroup v1
    quota="$(<"${cgroup_root}/cpu/cpu.cfs_quota_us")"
    period="$(<"${cgroup_root}/cpu/cpu.cfs_period_us")"
  else
    return 0
  fi
  if [[ "${quota}" == "max" || ! "${quota}" =~ ^[0-9]+$ || ! "${period}" =~ ^[1-9][0-9]*$ ]]; then
    return 0  # unlimited (v2 "max", v1 "-1") or unreadable: keep TF Serving's defaults
  fi
  if (( quota == 0 )); then
    return 0
  fi
  echo $(( (quota + period - 1) / period ))
}

# True when the caller already passed --<name>=... or --<name> ...
has_flag() {
  local name="$1" arg
  for arg in "${user_args[@]}"; do
    if [[ "${arg}" == "--${name}" || "${arg}" == "--${name}="* ]]; then
      return 0
    fi
  done
  return 1
}

user_args=("$@")
args=(
  "--port=8500"
  "--rest_api_port=8501"
  "--model_config_file=${config_dir}/models.config"
  "--monitoring_config_file=${config_dir}/monitoring.config"
)

cores="$(cpu_quota_cores)"
if [[ -n "${cores}" ]]; then
  # Same rule as kubernetes/base/deployment.yaml: intra-op = cores,
  # inter-op = ceil(cores / 2), REST threads = 4 x cores.
  has_flag tensorflow_intra_op_parallelism ||
    args+=("--tensorflow_intra_op_parallelism=${cores}")
  has_flag tensorflow_inter_op_parallelism ||
    args+=("--tensorflow_inter_op_parallelism=$(( (cores + 1) / 2 ))")
  has_flag rest_api_num_threads ||
    args+=("--rest_api_num_threads=$(( cores * 4 ))")
fi

exec "${server[@]}" "${args[@]}" "${user_args[@]}"
