# ClickHouse for scripts/servers: Debian's clickhouse-server (18.16), with a configuration of
# its own in $SERVERS_DIR/clickhouse (nothing under /etc/clickhouse-server or /var/lib is
# used), HTTP on 127.0.0.1:${ODOMETER_TEST_CH_PORT:-58123} and the native protocol on
# 127.0.0.1:${ODOMETER_TEST_CH_TCP_PORT:-59000} only, user `default` without a password (a
# throwaway test server). Exports ODOMETER_TEST_CLICKHOUSE_URL: tests create and drop their
# own databases through it.
# shellcheck shell=bash

register_server clickhouse

CH_PORT="${ODOMETER_TEST_CH_PORT:-58123}"
CH_TCP_PORT="${ODOMETER_TEST_CH_TCP_PORT:-59000}"
CH_DIR="$SERVERS_DIR/clickhouse"

clickhouse_binary() {
    command -v clickhouse-server 2>/dev/null || { [ -x /usr/sbin/clickhouse-server ] && echo /usr/sbin/clickhouse-server; }
}

clickhouse_install() {
    clickhouse_binary >/dev/null || apt_install clickhouse-server
    clickhouse_binary >/dev/null || die "clickhouse: no clickhouse-server after installing"
}

clickhouse_pid() {
    [ -f "$CH_DIR/server.pid" ] && cat "$CH_DIR/server.pid"
}

clickhouse_answers() {
    [ "$(curl -fsS "http://127.0.0.1:$CH_PORT/ping" 2>/dev/null)" = "Ok." ]
}

clickhouse_running() {
    local pid
    pid="$(clickhouse_pid)" || return 1
    kill -0 "$pid" 2>/dev/null && clickhouse_answers
}

clickhouse_config() {
    cat <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$CH_DIR/server.log</log>
        <errorlog>$CH_DIR/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <http_port>$CH_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>512</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>200</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>
    <users_config>$CH_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
XML
}

clickhouse_users() {
    cat <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

clickhouse_start() {
    local bin
    bin="$(clickhouse_binary)"
    mkdir -p "$CH_DIR/data" "$CH_DIR/tmp" "$CH_DIR/user_files" "$CH_DIR/format_schemas"
    clickhouse_config >"$CH_DIR/config.xml"
    clickhouse_users >"$CH_DIR/users.xml"
    rm -f "$CH_DIR/server.pid"
    # Not --daemon: 18.16 daemonizes by changing to / and closing descriptors, which is fine,
    # but a plain background process is simpler to find and stop by its pid.
    nohup "$bin" --config-file="$CH_DIR/config.xml" >"$CH_DIR/stdout.log" 2>&1 &
    echo $! >"$CH_DIR/server.pid"
    wait_until 60 clickhouse clickhouse_answers || {
        tail -n 20 "$CH_DIR/server.err.log" "$CH_DIR/stdout.log" >&2 2>/dev/null || true
        die "clickhouse: not answering on 127.0.0.1:$CH_PORT (is the port taken? see $CH_DIR)"
    }
}

clickhouse_stop() {
    local pid
    pid="$(clickhouse_pid)" || return 0
    kill "$pid" 2>/dev/null || true
    local tries=150
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -gt 0 ]; do
        sleep 0.2
        tries=$((tries - 1))
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$CH_DIR/server.pid"
}

clickhouse_env() {
    echo "export ODOMETER_TEST_CLICKHOUSE_URL=clickhouse://127.0.0.1:$CH_PORT"
}
