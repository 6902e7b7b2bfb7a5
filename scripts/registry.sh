#!/usr/bin/env bash
# Starts or stops Debian's docker-registry (distribution 2.8) on a free
# 127.0.0.1 port, with everything under DIR:
#
#   scripts/registry.sh start DIR   prints 127.0.0.1:PORT once /v2/ answers
#   scripts/registry.sh stop DIR    stops it (by the PID in DIR/pid)
#
# DIR/config.yml   the configuration
# DIR/data/        blob and manifest storage (kept across restarts)
# DIR/addr         127.0.0.1:PORT
# DIR/pid          the registry's PID
# DIR/registry.log its log, including the access log (combined log format)
#
# Plain HTTP, no auth: clients must treat the address as insecure (skopeo
# --tls-verify=false, podman --tls-verify=false).
set -euo pipefail

REGISTRY=${REGISTRY_BIN:-/usr/bin/docker-registry}
START_TIMEOUT=15 # seconds

die() { printf 'registry.sh: %s\n' "$*" >&2; exit 1; }
usage() { die "usage: $0 start|stop DIR"; }

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# http_ok PORT: does GET /v2/ answer 200? Bash's /dev/tcp, no curl needed.
http_ok() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$1" >&3
	if ! IFS= read -r -t 2 line <&3; then
		exec 3<&-
		return 1
	fi
	exec 3<&-
	[[ $line == HTTP/1.[01]\ 200* ]]
}

# port_busy PORT: does something accept connections on it?
port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() {
	[ -f "$dir/pid" ] || return 1
	local pid
	pid=$(cat "$dir/pid")
	[ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$REGISTRY")" ]
}

start() {
	[ -x "$REGISTRY" ] || die "$REGISTRY missing: run scripts/install-deps.sh"
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	if running; then
		cat "$dir/addr"
		return 0
	fi
	rm -f "$dir/pid" "$dir/addr"
	local attempt port pid i
	for attempt in 1 2 3 4 5 6 7 8 9 10; do
		port=$(((RANDOM << 15 | RANDOM) % 30000 + 20000))
		port_busy "$port" && continue
		cat >"$dir/config.yml" <<-EOF
			version: 0.1
			log:
			  level: info
			  formatter: text
			  accesslog:
			    disabled: false
			storage:
			  filesystem:
			    rootdirectory: $dir/data
			  delete:
			    enabled: true
			  maintenance:
			    uploadpurging:
			      enabled: false
			http:
			  addr: 127.0.0.1:$port
			  secret: lazyfs-local-registry
			  headers:
			    X-Content-Type-Options: [nosniff]
		EOF
		# setsid: the registry outlives this script and the terminal.
		setsid "$REGISTRY" serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
		pid=$!
		for ((i = 0; i < START_TIMEOUT * 10; i++)); do
			if ! kill -0 "$pid" 2>/dev/null; then
				break # exited: most likely the port was taken meanwhile
			fi
			if http_ok "$port" 2>/dev/null; then
				echo "$pid" >"$dir/pid"
				echo "127.0.0.1:$port" >"$dir/addr"
				echo "127.0.0.1:$port"
				return 0
			fi
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			die "docker-registry on port $port did not answer /v2/ within ${START_TIMEOUT}s; see $dir/registry.log"
		fi
	done
	die "could not start docker-registry; see $dir/registry.log"
}

stop() {
	[ -d "$dir" ] || die "$dir: no such directory"
	if ! running; then
		rm -f "$dir/pid" "$dir/addr"
		return 0
	fi
	local pid i
	pid=$(cat "$dir/pid")
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/pid" "$dir/addr"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
