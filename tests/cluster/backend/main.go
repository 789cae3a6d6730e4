// Command backend stands in for the containers of the demo pods: one process
// serving plain HTTP on each pod's loopback backend address, so a
// port-forward through the kubelet stub reaches "the pod".
//
//	backend --serve NAME=IP:PORT [--serve ...]
//
// NAME is "namespace/pod" (or any label). Every path answers
// "hello from POD (NAMESPACE) on port PORT\n"; /small answers exactly 100 bytes;
// /slow is a download that stays open: 10 MiB announced, 1 KiB sent every
// 200 ms until the client goes.
package main

import (
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
)

type serveFlags []target

type target struct{ name, addr string }

func (s *serveFlags) String() string { return fmt.Sprint(*s) }

func (s *serveFlags) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return errors.New("want NAME=IP:PORT")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return err
	}
	*s = append(*s, target{name, addr})
	return nil
}

// small is the fixed 100-byte body of /small, for exact byte-count checks.
var small = []byte(strings.Repeat("0123456789", 9) + "kubesocks\n")

func main() {
	var targets serveFlags
	flag.Var(&targets, "serve", "NAME=IP:PORT to serve (repeatable)")
	flag.String("tag", "", "ignored; lets the test cluster find its own process by command line")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if len(targets) == 0 {
		log.Fatal("at least one --serve NAME=IP:PORT is required")
	}
	if len(small) != 100 {
		panic("small body must be 100 bytes")
	}

	// Listen on everything first so a bad address fails the whole process
	// before it reports itself as started.
	var listeners []net.Listener
	for _, t := range targets {
		ln, err := net.Listen("tcp", t.addr)
		if err != nil {
			log.Fatalf("%s: %v", t.name, err)
		}
		listeners = append(listeners, ln)
	}
	for i, t := range targets {
		srv := &http.Server{Handler: handler(t), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(listeners[i]); err != nil {
				log.Fatalf("%s: %v", t.name, err)
			}
		}()
		log.Printf("serving %s on http://%s", t.name, t.addr)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}

func handler(t target) http.Handler {
	_, port, _ := net.SplitHostPort(t.addr)
	hello := fmt.Sprintf("hello from %s on port %s\n", t.name, port)
	if ns, pod, ok := strings.Cut(t.name, "/"); ok {
		hello = fmt.Sprintf("hello from %s (%s) on port %s\n", pod, ns, port)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slow(w, r)
			return
		}
		body := []byte(hello)
		if r.URL.Path == "/small" {
			body = small
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

// slow trickles a 10 MiB body, 1 KiB every 200 ms, until the client goes.
func slow(w http.ResponseWriter, r *http.Request) {
	const total, chunk = 10 << 20, 1 << 10
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(total))
	flusher, _ := w.(http.Flusher)
	block := make([]byte, chunk)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; sent < total; sent += chunk {
		if _, err := w.Write(block); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
