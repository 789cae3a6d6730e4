# shellcheck shell=bash disable=SC2034
# Shared settings and helpers of tests/cluster/up and tests/cluster/down.
# Sourced, not executed. See the header of `up` for the interface.

K8S_VERSION=v1.36.3
CLUSTER_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KUBESOCKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesocks}
K8S_BIN_DIR=$CACHE/k8s-$K8S_VERSION
CLUSTER_DIR=${KUBESOCKS_CLUSTER_DIR:-${TMPDIR:-/tmp}/kubesocks-test-cluster}
CLUSTER_DIR=${CLUSTER_DIR%/}

APISERVER_PORT=${KUBESOCKS_APISERVER_PORT:-16443}
ETCD_PORT=${KUBESOCKS_ETCD_PORT:-12379}
ETCD_PEER_PORT=${KUBESOCKS_ETCD_PEER_PORT:-12380}
KUBELET_PORT=${KUBESOCKS_KUBELET_PORT:-11250}
CONTROLLER_MANAGER_PORT=${KUBESOCKS_CONTROLLER_MANAGER_PORT:-11257}

DEMO_NET=${KUBESOCKS_DEMO_BACKEND_NET:-127.0.1}

NODE_SPDY=node-spdy
NODE_WS=node-ws
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16

PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
PIDS=$CLUSTER_DIR/pids
# Start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kubelet-stub demo-backend)

T0=${EPOCHREALTIME/[.,]/}
# log: progress on stderr, with the time since the script started.
log() {
	local us=$((${EPOCHREALTIME/[.,]/} - T0))
	printf '[kubesocks-test-cluster %d.%01ds] %s\n' $((us / 1000000)) $((us / 100000 % 10)) "$*" >&2
}
die() { log "error: $*"; exit 1; }

# Serialise up/down on the same cluster dir (tests may call `up` in parallel).
# Children are started with 9>&- so they never hold the lock.
take_lock() {
	mkdir -p "$(dirname "$CLUSTER_DIR")"
	exec 9>"$CLUSTER_DIR.lock"
	flock 9
}

# pid_of NAME: the recorded PID of a component, if it is still that
# component. The command line must mention the cluster dir, so a recycled
# PID is never mistaken for (or killed as) one of ours.
pid_of() {
	local f=$PIDS/$1.pid pid
	[[ -r $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	is_ours "$pid" || return 1
	echo "$pid"
}

is_ours() {
	local cmdline
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
	[[ $cmdline == *"$CLUSTER_DIR/"* || $cmdline == *"$CLUSTER_DIR "* ]]
}

# Processes whose command line names this cluster dir and whose executable
# is one of our binaries, whether or not a pid file still records them
# (e.g. after an interrupted `up`).
stray_pids() {
	local p exe
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[[ $p == "$$" ]] && continue
		exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		case ${exe##*/} in
		etcd | kube-apiserver | kube-controller-manager | kubelet-stub | backend) ;;
		*) continue ;;
		esac
		is_ours "$p" && echo "$p"
	done
}

# remove_cluster_dir: the runtime dir, and etcd's data where up put it in
# /dev/shm.
remove_cluster_dir() {
	if [[ -L $CLUSTER_DIR/etcd ]]; then
		rm -rf "$(readlink "$CLUSTER_DIR/etcd")"
	fi
	rm -rf "$CLUSTER_DIR"
}

# stop_all: TERM every component (newest first), KILL what is left after 3 s,
# and fail if anything survives.
stop_all() {
	local pids=() i pid n
	for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
		pid=$(pid_of "${COMPONENTS[i]}") && pids+=("$pid")
	done
	for pid in $(stray_pids); do
		[[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
	done
	((${#pids[@]})) || return 0
	log "stopping PIDs ${pids[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	# 3 s, not more: a terminating kube-apiserver waits up to 60 s for open
	# watches, and nothing here is worth a graceful shutdown.
	for ((n = 0; n < 30; n++)); do
		alive_pids "${pids[@]}" >/dev/null || return 0
		sleep 0.1
	done
	mapfile -t pids < <(alive_pids "${pids[@]}")
	log "killing PIDs ${pids[*]} (did not exit after SIGTERM)"
	kill -KILL "${pids[@]}" 2>/dev/null || true
	for ((n = 0; n < 30; n++)); do
		alive_pids "${pids[@]}" >/dev/null || return 0
		sleep 0.1
	done
	die "processes still running after SIGKILL: $(alive_pids "${pids[@]}")"
}

# alive_pids PID...: prints those still running; fails if none is. A zombie
# counts as running unless it is our own child: the leader of a killed
# multi-threaded process is a zombie while its other threads still hold its
# sockets, and init reaps it a moment later.
alive_pids() {
	local p st ppid found=1
	for p; do
		read -r st ppid < <(awk '/^State:/ {s = $2} /^PPid:/ {pp = $2} END {print s, pp}' "/proc/$p/status" 2>/dev/null) || continue
		[[ -z $st ]] && continue
		[[ $st == Z && $ppid == "$$" ]] && continue
		echo "$p"
		found=0
	done
	return $found
}
