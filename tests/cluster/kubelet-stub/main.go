// Command kubelet-stub plays the kubelet for the kubesocks test control plane.
//
// There is no container runtime: the stub registers Nodes, reports the pods
// bound to them as Running (so the real controllers build real
// EndpointSlices), and serves the kubelet's port-forward endpoint, dialling
// a loopback "backend" address named by a pod annotation instead of a
// container's network namespace. Everything the apiserver talks to (TLS with
// client certs, SPDY, WebSocket pass-through, the SPDY-over-WebSocket tunnel)
// is the same code path a real kubelet uses.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Pod annotations understood by the stub. They are the test-facing interface.
const (
	annBackend         = "kubesocks.test/backend"          // loopback IP the pod's ports are served on
	annPodIP           = "kubesocks.test/pod-ip"           // fixed pod IP instead of an allocated one
	annReady           = "kubesocks.test/ready"            // "false" makes the pod not Ready
	annKeepTerminating = "kubesocks.test/keep-terminating" // "true" leaves a deleted pod Terminating
	annDropSessions    = "kubesocks.test/drop-sessions"    // each new value closes the pod's open port-forward sessions
	annDialDelay       = "kubesocks.test/dial-delay"       // a Go duration waited before each port-forward dials the backend
)

// nodeFlags collects repeated --node NAME[=FEATURE,...] flags.
type nodeFlags []nodeSpec

type nodeSpec struct {
	name     string
	features []string
}

func (n *nodeFlags) String() string { return fmt.Sprint(*n) }

func (n *nodeFlags) Set(v string) error {
	name, feats, _ := strings.Cut(v, "=")
	if name == "" {
		return errors.New("empty node name")
	}
	spec := nodeSpec{name: name}
	if feats != "" {
		spec.features = strings.Split(feats, ",")
	}
	*n = append(*n, spec)
	return nil
}

func main() {
	var (
		nodes      nodeFlags
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig with rights to manage nodes and pod status")
		listen     = flag.String("listen", "127.0.0.1:11250", "HTTPS address the apiserver connects to")
		certFile   = flag.String("tls-cert-file", "", "serving certificate (signed by the cluster CA)")
		keyFile    = flag.String("tls-private-key-file", "", "serving key")
		clientCA   = flag.String("client-ca-file", "", "CA that signs the apiserver's kubelet client certificate")
		podCIDR    = flag.String("pod-cidr", "10.244.0.0/16", "range pod IPs are allocated from")
	)
	flag.Var(&nodes, "node", "node to register, NAME[=DECLARED_FEATURE,...] (repeatable)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if *kubeconfig == "" || *certFile == "" || *keyFile == "" || *clientCA == "" || len(nodes) == 0 {
		log.Fatal("--kubeconfig, --tls-cert-file, --tls-private-key-file, --client-ca-file and --node are required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	cfg.UserAgent = "kubesocks-kubelet-stub"
	cfg.QPS, cfg.Burst = 100, 200 // tests create pods in bursts; don't lag behind them
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("client: %v", err)
	}

	_, port, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("--listen: %v", err)
	}
	var kubeletPort int32
	if _, err := fmt.Sscan(port, &kubeletPort); err != nil {
		log.Fatalf("--listen port: %v", err)
	}

	nodeNames := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if err := registerNode(ctx, client, n, kubeletPort); err != nil {
			log.Fatalf("register node %s: %v", n.name, err)
		}
		log.Printf("registered node %s (declared features %v)", n.name, n.features)
		nodeNames = append(nodeNames, n.name)
	}

	pods, err := newPodManager(client, nodeNames, *podCIDR)
	if err != nil {
		log.Fatalf("pod manager: %v", err)
	}
	if err := pods.start(ctx); err != nil {
		log.Fatalf("pod manager: %v", err)
	}

	pf, err := newPortForwardServer(ctx, pods)
	if err != nil {
		log.Fatalf("port-forward: %v", err)
	}

	tlsConfig, err := serverTLS(*certFile, *keyFile, *clientCA)
	if err != nil {
		log.Fatalf("tls: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/portForward/{namespace}/{pod}", pf.serveHTTP)
	mux.HandleFunc("/portForward/{namespace}/{pod}/{uid}", pf.serveHTTP)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		// Upgrades (SPDY, WebSocket) need HTTP/1.1: a non-nil empty map disables h2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     log.Default(),
		// Lets a session be broken from outside its handler (live.go).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return withConn(ctx, c) },
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx) // hijacked streams are not waited for; they die with the process
	}()
	log.Printf("serving kubelet API on https://%s for nodes %v", *listen, nodeNames)
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
	log.Print("stopped")
}

// serverTLS requires a client certificate signed by the cluster CA, as a
// kubelet started with --client-ca-file does, so the apiserver's
// --kubelet-client-certificate is really exercised.
func serverTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificates in %s", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, nil
}
