# tests/bench/prepare.sh, sourced by the benchmarks (tests/bench/run,
# tests/bench/scale) with $bench_name set: installs what is missing
# (tests/setup), starts the local test cluster if it is not running (and
# stops it again at exit only then), builds kubesocks and the bench examples
# in release mode into a temp dir ($bin) and kubectl from the cluster's own
# Kubernetes release ($kubectl, or $KUBESOCKS_BENCH_KUBECTL). Leaves
# $kubeconfig naming the cluster's admin kubeconfig.
say() { printf '[%s] %s\n' "$bench_name" "$*" >&2; }
die() { say "error: $*"; exit 1; }

tests/setup

command -v python3 >/dev/null || die "python3 not found: it runs the benchmark (apt-get install python3)"
source tests/cluster/common.sh
started_here=1
pid_of kube-apiserver >/dev/null && started_here=0
bin=""
cleanup() {
	[[ -z $bin ]] || rm -rf "$bin"
	# The cluster is shared: stop it only if this run started it.
	if ((started_here)); then tests/cluster/down; fi
}
trap cleanup EXIT
kubeconfig=$(tests/cluster/up | tail -n 1)

say "building kubesocks and the bench examples (release)"
cargo build --release --locked --quiet --bin kubesocks --example bare_forward --example bench_client
# The target dir is shared: run copies, so a build elsewhere cannot swap them mid-run.
bin=$(mktemp -d "${TMPDIR:-/tmp}/kubesocks-bench-bin.XXXXXX")
mkdir "$bin/examples"
cp "$CARGO_TARGET_DIR/release/kubesocks" "$bin/"
cp "$CARGO_TARGET_DIR/release/examples/bare_forward" "$CARGO_TARGET_DIR/release/examples/bench_client" "$bin/examples/"

kubectl=${KUBESOCKS_BENCH_KUBECTL:-}
if [[ -z $kubectl ]]; then
	# Keyed by the module files and the Go version, like the cluster tools.
	src=tests/bench/kubectl
	hash=$( (cd "$src" && go version && sha256sum go.mod go.sum) | sha256sum)
	dir=$KUBESOCKS_CACHE/bench-kubectl-${hash:0:16}
	kubectl=$dir/kubectl
	if [[ ! -x $kubectl ]]; then
		version=$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
		say "building kubectl $version into $dir (about a minute once the cluster is built)"
		mkdir -p "$KUBESOCKS_CACHE"
		tmp=$(mktemp -d "$KUBESOCKS_CACHE/.bench-kubectl.XXXXXX")
		V=k8s.io/component-base/version
		minor=${version#v1.}
		minor=${minor%%.*}
		(cd "$src" && GOFLAGS="-buildvcs=false -mod=readonly" go build -trimpath \
			-ldflags "-s -w -X $V.gitVersion=$version -X $V.gitMajor=1 -X $V.gitMinor=$minor -X $V.gitTreeState=clean" \
			-o "$tmp/" k8s.io/kubernetes/cmd/kubectl) || { rm -rf "$tmp"; die "building kubectl failed"; }
		mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp" # built concurrently by someone else
	fi
fi

