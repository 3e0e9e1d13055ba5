# Sourced by scripts/bench/backfill.sh and scripts/reliability/crash_loop.sh: a local receiver like Devo's,
# rsyslog with TLS 1.2/1.3 and client certificates checked against our own CA (x509/certvalid).

# make_pki DIR: a CA (ca.crt) and a server and a client certificate signed by it, for 127.0.0.1.
make_pki() {
  local c=$1 who
  mkdir -p "$c"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout "$c/ca.key" -out "$c/ca.crt" 2>/dev/null
  for who in server client; do
    openssl req -newkey rsa:2048 -nodes -subj /CN=$who -addext "subjectAltName=IP:127.0.0.1" \
      -keyout "$c/$who.key" -out "$c/$who.csr" 2>/dev/null
    openssl x509 -req -in "$c/$who.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 2 \
      -copy_extensions copy -out "$c/$who.crt" 2>/dev/null
  done
}

# start_rsyslog WORKDIR CERTDIR PORT: starts rsyslogd in the background (pid in $rsyslog_pid),
# storing every record exactly as received in WORKDIR/received.log.
start_rsyslog() {
  local w=$1 c=$2 port=$3
  mkdir -p "$w/rsyslog"
  cat >"$w/rsyslog.conf" <<CONF
global(workDirectory="$w/rsyslog" maxMessageSize="1m"
  defaultNetstreamDriverCAFile="$c/ca.crt" defaultNetstreamDriverCertFile="$c/server.crt"
  defaultNetstreamDriverKeyFile="$c/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.Authmode="x509/certvalid")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="collect") { action(type="omfile" file="$w/received.log" template="raw") }
input(type="imtcp" address="127.0.0.1" port="$port" ruleset="collect")
CONF
  rsyslogd -n -f "$w/rsyslog.conf" -i "$w/rsyslog.pid" >"$w/rsyslogd.log" 2>&1 &
  rsyslog_pid=$!
}

# start_rsyslog_relp WORKDIR CERTDIR PORT: like start_rsyslog, but rsyslog's imrelp (RELP over
# TLS; tls.authMode "name" checks the client certificate against our CA and its name `client`).
# Queues as start_rsyslog's (rsyslog's defaults), so that the two receivers compare.
start_rsyslog_relp() {
  local w=$1 c=$2 port=$3
  mkdir -p "$w/rsyslog"
  cat >"$w/rsyslog.conf" <<CONF
global(workDirectory="$w/rsyslog" maxMessageSize="1m")
module(load="imrelp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="collect") { action(type="omfile" file="$w/received.log" template="raw") }
input(type="imrelp" address="127.0.0.1" port="$port" ruleset="collect" tls="on" tls.caCert="$c/ca.crt"
  tls.myCert="$c/server.crt" tls.myPrivKey="$c/server.key" tls.authMode="name" tls.permittedPeer=["client"])
CONF
  rsyslogd -n -f "$w/rsyslog.conf" -i "$w/rsyslog.pid" >"$w/rsyslogd.log" 2>&1 &
  rsyslog_pid=$!
}

# relp_output_yaml CERTDIR PORT: the collector's relp output for that receiver (window_size
# $RELP_WINDOW when set, else the output's default).
relp_output_yaml() {
  echo "  relp: {type: relp, config: {address: 127.0.0.1, port: $2, chain: $1/ca.crt, cert: $1/client.crt, key: $1/client.key${RELP_WINDOW:+, window_size: $RELP_WINDOW}}}"
}

# devo_output_yaml CERTDIR PORT: the collector's devo_platform output for that receiver.
devo_output_yaml() {
  echo "  devo: {type: devo_platform, config: {address: 127.0.0.1, port: $2, chain: $1/ca.crt, cert: $1/client.crt, key: $1/client.key}}"
}

# start_receiver MODE WORKDIR PORT: the benchmark's receiver for MODE `tls` (imtcp) or `relp`
# (imrelp), certificates made under WORKDIR/certs; sets $rsyslog_pid and $c (the certificate
# directory). Shared by backfill.sh and raw_sender.sh, so that the collector and the raw sender
# meet the very same rsyslog.
start_receiver() {
  local mode=$1 w=$2 port=$3
  c="$w/certs"
  make_pki "$c"
  if [ "$mode" = tls ]; then start_rsyslog "$w" "$c" "$port"; else start_rsyslog_relp "$w" "$c" "$port"; fi
  sleep 1
}

# cpu_ticks PID: user + system CPU of PID so far, in clock ticks (1/100 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# wait_settled FILE: waits until FILE's line count stops growing (rsyslog writes asynchronously).
wait_settled() {
  local prev=-1 cur
  while :; do cur=$(wc -l <"$1"); [ "$cur" = "$prev" ] && break; prev=$cur; sleep 0.5; done
}
