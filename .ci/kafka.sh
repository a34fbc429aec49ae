#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for payoutd's tests,
# run straight from Maven Central jars: no tarball download, no docker.
#
#   .ci/kafka.sh fetch     resolve the broker jars into the libs cache (Maven)
#   .ci/kafka.sh start     fresh data dir, format storage, start, wait until it answers
#   .ci/kafka.sh stop      SIGTERM, wait, SIGKILL; delete data unless KEEP_KAFKA_DATA is set
#   .ci/kafka.sh restart   stop keeping data, start again on the same data (chaos tests)
#   .ci/kafka.sh status    say whether it is running
#   .ci/kafka.sh stall N   SIGSTOP the broker for N seconds, then SIGCONT (stall tests)
#   .ci/kafka.sh topic NAME [PARTITIONS]   create a topic (auto-create is off)
#   .ci/kafka.sh logs [N]  last N lines of the broker logs
#   .ci/kafka.sh sasl-env  print the exports that reach the SASL_SSL listener (tests read them)
#
# Env knobs:
#   KAFKA_PORT             PLAINTEXT port (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER port (default KAFKA_PORT+1)
#   KAFKA_STATE_DIR        data/config/log dir (default ${TMPDIR:-/tmp}/payoutd-kafka-$KAFKA_PORT)
#   KAFKA_LIBS_DIR         jar dir (default: cache dir keyed by a hash of .ci/kafka/pom.xml)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   KEEP_KAFKA_DATA        if set, `stop` leaves the data dir in place
#   KAFKA_MVN_ARGS         extra args for mvn (e.g. -Dmaven.repo.local=...)
#   KAFKA_SASL_SSL         if 1, a second listener SASL_SSL on KAFKA_SASL_SSL_PORT (default
#                          KAFKA_PORT+2): a CA and a broker certificate made at start with
#                          openssl, user "payoutd" for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
#                          with a random password (files under $STATE_DIR/tls); and a third,
#                          SSL with client certificates required (mutual TLS), on
#                          KAFKA_MTLS_PORT (default KAFKA_PORT+3), with a client certificate
set -euo pipefail

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$CI_DIR/kafka/pom.xml"
LOG4J_CONF="$CI_DIR/kafka/log4j2.properties"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
# One state dir per port, at a fixed path, so stop/restart (possibly called from
# a test process) find the running broker without extra bookkeeping.
STATE_DIR="${KAFKA_STATE_DIR:-${TMPDIR:-/tmp}/payoutd-kafka-$KAFKA_PORT}"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
PID_FILE="$STATE_DIR/kafka.pid"
PROPS="$STATE_DIR/server.properties"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 2))}"
MTLS_PORT="${KAFKA_MTLS_PORT:-$((KAFKA_PORT + 3))}"
TLS_DIR="$STATE_DIR/tls"
SASL_USER=payoutd

# Libs live outside the work tree (survive fresh clones on the same machine) and
# are keyed by the pom's hash so editing the pom (e.g. a version bump) refetches.
CACHE_ROOT="${PAYOUTD_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/payoutd-ci}"
POM_HASH="$(sha256sum "$POM" | cut -c1-12)"
LIBS_DIR="${KAFKA_LIBS_DIR:-$CACHE_ROOT/kafka-libs-$POM_HASH}"

log() { echo "[kafka.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

show_broker_log() {
  for f in "$LOG_DIR/server.log" "$LOG_DIR/kafka.out"; do
    if [[ -s $f ]]; then
      log "---- last 50 lines of $f ----"
      tail -n 50 "$f" >&2
    fi
  done
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found ($2); .ci/run installs it"; }

jar_count() { local jars=("$LIBS_DIR"/*.jar); echo "${#jars[@]}"; }

cmd_fetch() {
  if [[ -f $LIBS_DIR/.complete ]]; then
    log "libs cached: $LIBS_DIR ($(jar_count) jars)"
    return 0
  fi
  need mvn "apt-get install maven"
  local t0 tmp mvn_log
  t0=$(now)
  mkdir -p "$CACHE_ROOT"
  # Copy into a temp dir and rename at the end, so an interrupted fetch never
  # leaves a half-filled libs dir that looks complete.
  tmp="$(mktemp -d "$CACHE_ROOT/.fetch.XXXXXX")"
  mvn_log="$tmp.mvn.log"
  log "fetching Kafka jars from Maven Central into $LIBS_DIR ..."
  # -q keeps CI output short; the full log is kept and shown if Maven fails.
  # shellcheck disable=SC2086
  if ! mvn -B -q -Dstyle.color=never -f "$POM" ${KAFKA_MVN_ARGS:-} \
        dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime \
        >"$mvn_log" 2>&1; then
    cat "$mvn_log" >&2
    rm -rf "$tmp" "$mvn_log"
    die "mvn dependency:copy-dependencies failed"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp" "$mvn_log"; die "no kafka_2.13 jar resolved"; }
  touch "$tmp/.complete"
  rm -rf "$LIBS_DIR" "$mvn_log"
  mv "$tmp" "$LIBS_DIR"
  log "fetched $(jar_count) jars in $(elapsed "$t0")s"
}

# Prints the broker pid if our broker is running (pid file + live java kafka.Kafka
# process using our properties file); returns 1 otherwise. Never trusts a stale pid.
running_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

broker_answers() {
  # -L asks for cluster metadata; a listed "broker 1" means the broker is serving.
  # After a restart, also wait until every existing partition has a leader again.
  local md
  md="$(kcat -b "$BOOTSTRAP" -L -m 2 2>/dev/null)" || return 1
  grep -q "broker 1 at" <<<"$md" && ! grep -q "leader -1" <<<"$md"
}

java_cp() { echo "$LIBS_DIR/*"; }

sasl_ssl_on() { [[ ${KAFKA_SASL_SSL:-} == 1 ]]; }

# A throw-away CA and a broker certificate for 127.0.0.1/localhost, and the
# SASL password, made once per state dir (a restart keeps them).
make_tls() {
  [[ -f $TLS_DIR/broker.p12 ]] && return 0
  need openssl "apt-get install openssl"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl rand -hex 16 >sasl-password
    openssl rand -hex 16 >store-password
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=payoutd CI CA" \
      -keyout ca.key -out ca.pem >openssl.log 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr >>openssl.log 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
      -extfile san.ext -out broker.pem >>openssl.log 2>&1
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout file:store-password -out broker.p12 >>openssl.log 2>&1
    # A client certificate from the same CA, for the mutual-TLS listener.
    openssl req -newkey rsa:2048 -nodes -subj "/CN=payoutd-client" -keyout client.key -out client.csr >>openssl.log 2>&1
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 \
      -extfile client.ext -out client.pem >>openssl.log 2>&1
  ) || { cat "$TLS_DIR/openssl.log" >&2; die "making the SASL_SSL certificates failed"; }
}

# Extra server.properties lines for the SASL_SSL listener.
sasl_ssl_props() {
  local pw store
  pw="$(cat "$TLS_DIR/sasl-password")"
  store="$(cat "$TLS_DIR/store-password")"
  cat <<EOF
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$pw";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$store
ssl.key.password=$store
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
listener.name.ssl.ssl.client.auth=required
EOF
}

write_props() {
  local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if sasl_ssl_on; then
    listeners+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$MTLS_PORT"
    protocols+=",SASL_SSL:SASL_SSL,SSL:SSL"
  fi
  cat >"$PROPS" <<EOF
# Written by .ci/kafka.sh; single-node KRaft broker for tests only.
process.roles=broker,controller
node.id=1
# Dynamic quorum (KIP-853), formatted with --standalone.
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$DATA_DIR

num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# Internal topics must fit on one node. Few partitions: creating the default 50
# on first use costs seconds per test run and buys nothing on one node.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumer groups should not sit idle 3 s waiting for more members.
group.initial.rebalance.delay.ms=0
# Off on purpose: tests must create the topics they use (as production must),
# so a typo'd topic name fails loudly instead of silently auto-creating.
auto.create.topics.enable=false
delete.topic.enable=true
EOF
  if sasl_ssl_on; then sasl_ssl_props >>"$PROPS"; fi
}

cmd_start() {
  local reuse="${1:-}"   # "reuse" = keep existing data (restart)
  need java "apt-get install openjdk-17-jre-headless"
  need kcat "apt-get install kcat"
  need setsid "util-linux"
  cmd_fetch

  local pid
  if pid="$(running_pid)"; then
    if [[ $reuse == reuse ]]; then die "broker still running (pid $pid)"; fi
    # A leftover from an earlier, killed run: replace it with a fresh broker.
    log "a broker from an earlier run is still up (pid $pid); stopping it first"
    KEEP_KAFKA_DATA='' cmd_stop
  fi
  local ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
  if sasl_ssl_on; then ports+=("$SASL_SSL_PORT" "$MTLS_PORT"); fi
  for p in "${ports[@]}"; do
    port_busy "$p" && die "port $p is already in use by another process (set KAFKA_PORT to move)"
  done

  if [[ $reuse != reuse ]]; then
    rm -rf "$STATE_DIR"
  fi
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  if sasl_ssl_on; then make_tls; fi
  write_props

  local t0
  t0=$(now)
  if [[ ! -f $DATA_DIR/meta.properties ]]; then
    local cluster_id
    cluster_id="$(java -cp "$(java_cp)" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/format.log")"
    local scram=()
    if sasl_ssl_on; then
      # SCRAM credentials live in the cluster metadata; KRaft takes them at format.
      local pw
      pw="$(cat "$TLS_DIR/sasl-password")"
      scram=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$pw]" --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$pw]")
    fi
    if ! java -cp "$(java_cp)" -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
          kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --standalone "${scram[@]}" \
          >>"$LOG_DIR/format.log" 2>&1; then
      cat "$LOG_DIR/format.log" >&2
      die "storage format failed"
    fi
  fi

  # setsid + all fds redirected: the broker must not die with, or hold open the
  # stdout pipe of, whoever started it (a `go test` process calls restart).
  # The inner shell writes its own pid and then execs java, so the pid file
  # holds the JVM's pid whether or not setsid had to fork.
  # shellcheck disable=SC2016,SC2086
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$(java_cp)" kafka.Kafka "$PROPS" \
    </dev/null >>"$LOG_DIR/kafka.out" 2>&1 &
  local launcher=$!
  # Wait (briefly) for the pid file so running_pid works in the loop below.
  for _ in $(seq 50); do [[ -s $PID_FILE ]] && break; sleep 0.1; done
  [[ -s $PID_FILE ]] || die "broker launcher (pid $launcher) did not start"

  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  until broker_answers; do
    if ! running_pid >/dev/null; then
      show_broker_log
      die "broker process exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      show_broker_log
      KEEP_KAFKA_DATA=1 cmd_stop || true
      die "broker did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT:-90}s"
    fi
    sleep 0.5
  done
  log "broker up on $BOOTSTRAP (pid $(cat "$PID_FILE"), data $DATA_DIR) in $(elapsed "$t0")s"
  if sasl_ssl_on; then log "SASL_SSL listener on 127.0.0.1:$SASL_SSL_PORT, mutual TLS on 127.0.0.1:$MTLS_PORT (CA $TLS_DIR/ca.pem)"; fi
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    local t0
    t0=$(now)
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + ${KAFKA_STOP_TIMEOUT:-30}))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "broker (pid $pid) ignored SIGTERM for ${KAFKA_STOP_TIMEOUT:-30}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    log "broker stopped (pid $pid) in $(elapsed "$t0")s"
  else
    log "broker not running"
  fi
  rm -f "$PID_FILE"
  if [[ -z ${KEEP_KAFKA_DATA:-} ]]; then
    rm -rf "$STATE_DIR"
  fi
}

cmd_restart() {
  local t0
  t0=$(now)
  KEEP_KAFKA_DATA=1 cmd_stop
  cmd_start reuse
  log "restart took $(elapsed "$t0")s"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if broker_answers; then
      echo "running (pid $pid) on $BOOTSTRAP, data $DATA_DIR"
    else
      echo "process running (pid $pid) but not answering on $BOOTSTRAP"
    fi
  else
    echo "not running"
    return 1
  fi
}

# A stall, not a crash: the process keeps its sockets and state but answers
# nothing, as a broker in a long GC pause or on a frozen VM does. SIGCONT is
# sent however this script ends, so a cancelled stall never leaves the
# broker stopped.
cmd_stall() {
  local secs="${1:-}"
  [[ $secs =~ ^[0-9]+$ ]] || die "usage: kafka.sh stall SECONDS"
  STALLED_PID="$(running_pid)" || die "broker not running"
  trap 'kill -CONT "$STALLED_PID" 2>/dev/null || true' EXIT
  log "stalling broker (pid $STALLED_PID) for ${secs}s"
  kill -STOP "$STALLED_PID"
  sleep "$secs"
  kill -CONT "$STALLED_PID"
  log "broker (pid $STALLED_PID) continued"
}

cmd_sasl_env() {
  [[ -f $TLS_DIR/ca.pem ]] || die "no SASL_SSL listener here (start with KAFKA_SASL_SSL=1)"
  cat <<EOF
export PAYOUTD_KAFKA_SASL_SSL_BROKERS=127.0.0.1:$SASL_SSL_PORT
export PAYOUTD_KAFKA_SASL_SSL_CA_FILE=$TLS_DIR/ca.pem
export PAYOUTD_KAFKA_SASL_SSL_USER=$SASL_USER
export PAYOUTD_KAFKA_SASL_SSL_PASSWORD_FILE=$TLS_DIR/sasl-password
export PAYOUTD_KAFKA_MTLS_BROKERS=127.0.0.1:$MTLS_PORT
export PAYOUTD_KAFKA_MTLS_CERT_FILE=$TLS_DIR/client.pem
export PAYOUTD_KAFKA_MTLS_KEY_FILE=$TLS_DIR/client.key
EOF
}

cmd_topic() {
  [[ $# -ge 1 ]] || die "usage: kafka.sh topic NAME [PARTITIONS]"
  cmd_fetch
  java -cp "$(java_cp)" "$CI_DIR/kafka/KafkaAdmin.java" "$BOOTSTRAP" create-topic "$@"
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  stall) shift; cmd_stall "$@" ;;
  sasl-env) cmd_sasl_env ;;
  topic) shift; cmd_topic "$@" ;;
  logs) tail -n "${2:-50}" "$LOG_DIR/server.log" "$LOG_DIR/kafka.out" 2>/dev/null || log "no broker logs in $LOG_DIR" ;;
  libs) echo "$LIBS_DIR" ;;   # for scripts that want to run other Kafka classes
  *) echo "usage: $0 {fetch|start|stop|restart|status|stall SECONDS|sasl-env|topic NAME [PARTITIONS]|logs [N]|libs}" >&2; exit 2 ;;
esac
