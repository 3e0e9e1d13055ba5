# Sourced by scripts/bench/backfill.sh, scripts/bench/run.sh and scripts/reliability/crash_loop.sh:
# the part of a collector config that they all write alike.

# config_head_yaml NAME DIR OUTPUTS: a config's `globals` (id and name NAME, the state kept in
# DIR/state), its `outputs` (OUTPUTS: the indented output lines) and its input up to
# `services:`; the caller appends the services, indented by six spaces. The API key is the
# simulator's default one.
config_head_yaml() {
  cat <<YAML
globals:
  id: $1
  name: $1
  persistence: {type: filesystem, config: {directory_name: $2/state}}
outputs:
$3
inputs:
  proofpoint_isolation:
    id: "10001"
    credentials: {api_key: "00000000-0000-0000-0000-000000000000"}
    services:
YAML
}
