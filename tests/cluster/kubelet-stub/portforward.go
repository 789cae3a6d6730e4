package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/proxy"
	tunnel "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// The real kubelet's defaults (streamingConnectionIdleTimeout, and the CRI
// streaming server's stream creation timeout).
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
	backendDialTimeout    = 5 * time.Second
)

// Request paths, as logged.
const (
	pathSPDY      = "spdy"      // SPDY/3.1 upgrade (apiserver-translated WebSocket, or a SPDY client)
	pathWebSocket = "websocket" // v4.channel.k8s.io passed through by the apiserver
	pathTunnel    = "tunnel"    // SPDY/3.1+portforward.k8s.io: SPDY framed inside a WebSocket
)

type portForwardServer struct {
	pods *podManager
	// internal serves plain SPDY on a loopback port for the tunnel path: the
	// tunneling handler can only wrap a proxy to a real upgrade server, which
	// is also how the real kubelet does it (it proxies to the CRI runtime).
	internal *url.URL
	requests atomic.Uint64
}

func newPortForwardServer(ctx context.Context, pods *podManager) (*portForwardServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &portForwardServer{pods: pods, internal: &url.URL{Scheme: "http", Host: ln.Addr().String()}}
	mux := http.NewServeMux()
	mux.HandleFunc("/tunnel/{req}/{namespace}/{pod}", s.serveTunneled)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second, ErrorLog: log.Default()}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return s, nil
}

// serveHTTP handles /portForward/{namespace}/{pod}[/{uid}] like the
// kubelet's getPortForward.
func (s *portForwardServer) serveHTTP(w http.ResponseWriter, req *http.Request) {
	ns, name, uid := req.PathValue("namespace"), req.PathValue("pod"), req.PathValue("uid")
	id := s.requests.Add(1)

	path := pathSPDY
	switch {
	case wsstream.IsWebSocketRequestWithTunnelingProtocol(req):
		path = pathTunnel
	case wsstream.IsWebSocketRequest(req):
		path = pathWebSocket
	}

	opts := &portforward.V4Options{} // SPDY clients name ports per stream
	if path == pathWebSocket {
		var err error
		if opts, err = portforward.NewV4Options(req); err != nil {
			log.Printf("port-forward #%d %s/%s via %s: bad request: %v", id, ns, name, path, err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}

	pod, err := s.pods.get(req.Context(), ns, name)
	switch {
	case apierrors.IsNotFound(err):
		log.Printf("port-forward #%d %s/%s via %s: pod does not exist on this kubelet", id, ns, name, path)
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return
	case err != nil:
		log.Printf("port-forward #%d %s/%s via %s: %v", id, ns, name, path, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	case uid != "" && types.UID(uid) != pod.UID:
		log.Printf("port-forward #%d %s/%s via %s: uid %s does not match pod uid %s", id, ns, name, path, uid, pod.UID)
		http.Error(w, "pod not found", http.StatusNotFound)
		return
	}

	log.Printf("port-forward #%d %s/%s via %s (node %s, ports %v)", id, ns, name, path, pod.Spec.NodeName, portsOf(path, opts))
	forget := s.pods.live.addSession(req.Context(), pod.UID, id, fmt.Sprintf("port-forward #%d %s/%s via %s", id, ns, name, path))
	defer forget()
	if path == pathTunnel {
		// Unwrap the WebSocket and proxy the SPDY inside it to our internal
		// SPDY server, exactly as the kubelet does with NewTunnelingHandler.
		loc := *s.internal
		loc.Path = fmt.Sprintf("/tunnel/%d/%s/%s", id, url.PathEscape(ns), url.PathEscape(name))
		upstream := proxy.NewUpgradeAwareHandler(&loc, nil, false, true, errorResponder{})
		tunnel.NewTunnelingHandler(upstream).ServeHTTP(w, req)
	} else {
		s.serve(w, req, id, path, pod, opts)
	}
	log.Printf("port-forward #%d %s/%s via %s: connection closed", id, ns, name, path)
}

// serveTunneled is the internal SPDY endpoint behind the tunnel path.
func (s *portForwardServer) serveTunneled(w http.ResponseWriter, req *http.Request) {
	id, _ := strconv.ParseUint(req.PathValue("req"), 10, 64)
	pod, err := s.pods.get(req.Context(), req.PathValue("namespace"), req.PathValue("pod"))
	if err != nil {
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return
	}
	s.serve(w, req, id, pathTunnel, pod, &portforward.V4Options{})
}

func (s *portForwardServer) serve(w http.ResponseWriter, req *http.Request, id uint64, path string, pod *v1.Pod, opts *portforward.V4Options) {
	f := &forwarder{s: s, id: id, path: path, ns: pod.Namespace, name: pod.Name, uid: pod.UID}
	// Like the CRI runtime's streaming server, name the pod by its sandbox
	// ID with an empty uid; errors then read exactly like a real kubelet's.
	portforward.ServePortForward(w, req, f, f.sandboxID(), "", opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

func portsOf(path string, opts *portforward.V4Options) string {
	if path != pathWebSocket {
		return "per stream"
	}
	return fmt.Sprint(opts.Ports)
}

type errorResponder struct{}

func (errorResponder) Error(w http.ResponseWriter, _ *http.Request, err error) {
	log.Printf("tunnel proxy error: %v", err)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

// forwarder implements portforward.PortForwarder for one pod: each
// forwarded connection dials the pod's loopback backend on the same port.
type forwarder struct {
	s              *portForwardServer
	id             uint64
	path           string
	ns, name       string
	uid            types.UID
	connectionsSeq atomic.Uint64
}

func (f *forwarder) sandboxID() string {
	sum := sha256.Sum256([]byte("sandbox/" + string(f.uid)))
	return hex.EncodeToString(sum[:])
}

func (f *forwarder) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	conn := f.connectionsSeq.Add(1)
	prefix := fmt.Sprintf("port-forward #%d.%d %s/%s port %d via %s", f.id, conn, f.ns, f.name, port, f.path)
	// The error text mirrors containerd's (wrapped by ServePortForward into
	// "error forwarding port P to pod SANDBOX, uid : ...").
	fail := func(err error) error {
		log.Printf("%s: %v", prefix, err)
		return fmt.Errorf("failed to execute portforward in network namespace %q: failed to connect to localhost:%d inside namespace %q, IPv4: %w",
			"/var/run/netns/cni-"+string(f.uid), port, f.sandboxID(), err)
	}
	// Deleting the pod stops its "containers": the connection is reset (live.go).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer f.s.pods.live.addForward(f.uid, cancel)()

	// Re-read the pod per connection so tests can change the backend annotation.
	pod, err := f.s.pods.get(ctx, f.ns, f.name)
	if err != nil {
		return fail(fmt.Errorf("pod %s/%s is gone: %v", f.ns, f.name, err))
	}
	backend := pod.Annotations[annBackend]
	if backend == "" {
		return fail(fmt.Errorf("pod %s/%s has no %q annotation naming its loopback backend (kubesocks test stub)", f.ns, f.name, annBackend))
	}
	addr := net.JoinHostPort(backend, strconv.Itoa(int(port)))
	// A busy node dials late; its refusal then comes well after the streams' replies.
	if v := pod.Annotations[annDialDelay]; v != "" {
		delay, err := time.ParseDuration(v)
		if err != nil {
			return fail(fmt.Errorf("pod %s/%s: annotation %q is not a duration: %v (kubesocks test stub)", f.ns, f.name, annDialDelay, err))
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return fail(context.Cause(ctx))
		}
	}
	d := net.Dialer{Timeout: backendDialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() {
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0) // a reset, as when the container's process dies
		}
		_ = c.Close()
	})
	defer stop()
	log.Printf("%s: connected to %s", prefix, addr)

	// Client -> backend. A clean EOF from the client half-closes toward the
	// backend so it can still answer; anything else tears the connection down.
	go func() {
		_, err := io.Copy(c, stream)
		if tcp, ok := c.(*net.TCPConn); ok && err == nil {
			_ = tcp.CloseWrite()
		} else {
			_ = c.Close()
		}
	}()
	// Backend -> client; when the backend is done, the stream is closed by
	// ServePortForward once we return. A failed copy is an error, reported
	// on the error stream (and both streams reset), as containerd does.
	down, err := io.Copy(stream, c)
	if cause := context.Cause(ctx); errors.Is(cause, errContainerStopped) {
		err = cause
	} else if errors.Is(err, net.ErrClosed) {
		err = nil // closed here, after the client's side failed
	}
	if err != nil {
		log.Printf("%s: copy to client failed after %d bytes: %v", prefix, down, err)
		return fmt.Errorf("failed to copy port forward output for %q port %d: %w", f.sandboxID(), port, err)
	}
	log.Printf("%s: closed after %d bytes to client", prefix, down)
	return nil
}
