package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// errContainerStopped is why a pod's forwarded connections end when the pod
// is deleted: its containers are gone, as on a real node.
var errContainerStopped = errors.New("the container was stopped (pod deleted)")

// connKey carries the apiserver's connection to us in a request's context,
// so a session can be broken from outside its handler.
type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// liveSessions knows, per pod, the port-forward sessions open to it (the
// apiserver's connections carrying them) and the connections forwarded to
// its containers, so tests can break them:
//
//   - a new value of the pod annotation kubesocks.test/drop-sessions closes
//     the pod's sessions open at that moment (the apiserver then sees its
//     kubelet connection break mid-stream, as when a kubelet restarts);
//   - a pod that is finalised after deletion resets the connections to its
//     containers, and each forward reports errContainerStopped on its error
//     stream, as a kubelet does when a copy fails.
type liveSessions struct {
	mu       sync.Mutex
	sessions map[types.UID]map[uint64]liveSession
	forwards map[types.UID]map[*context.CancelCauseFunc]struct{}
	// The last drop-sessions value seen per pod: only a change drops.
	dropSeen map[types.UID]string
}

type liveSession struct {
	conn net.Conn
	what string // "port-forward #N ns/pod via PATH", for the log
}

func newLiveSessions() *liveSessions {
	return &liveSessions{
		sessions: map[types.UID]map[uint64]liveSession{},
		forwards: map[types.UID]map[*context.CancelCauseFunc]struct{}{},
		dropSeen: map[types.UID]string{},
	}
}

// addSession records the connection of session `id` to pod `uid`, taken
// from the request's context; the returned func forgets it.
func (l *liveSessions) addSession(ctx context.Context, uid types.UID, id uint64, what string) func() {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if c == nil {
		return func() {}
	}
	// Close the TCP connection under the TLS one: tls.Conn.Close would
	// first wait to write a close_notify, behind a write blocked on a
	// client that does not read.
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions[uid] == nil {
		l.sessions[uid] = map[uint64]liveSession{}
	}
	l.sessions[uid][id] = liveSession{conn: c, what: what}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.sessions[uid], id)
		if len(l.sessions[uid]) == 0 {
			delete(l.sessions, uid)
		}
	}
}

// addForward records a forwarded connection to pod `uid`; `cancel` ends it
// with a cause. The returned func forgets it.
func (l *liveSessions) addForward(uid types.UID, cancel context.CancelCauseFunc) func() {
	key := &cancel
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.forwards[uid] == nil {
		l.forwards[uid] = map[*context.CancelCauseFunc]struct{}{}
	}
	l.forwards[uid][key] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.forwards[uid], key)
		if len(l.forwards[uid]) == 0 {
			delete(l.forwards, uid)
		}
	}
}

// observe is called with every version of a pod the stub sees.
func (l *liveSessions) observe(pod *v1.Pod) {
	value, set := pod.Annotations[annDropSessions]
	l.mu.Lock()
	defer l.mu.Unlock()
	seen, known := l.dropSeen[pod.UID]
	l.dropSeen[pod.UID] = value
	if !set || (known && seen == value) {
		return
	}
	for id, s := range l.sessions[pod.UID] {
		log.Printf("%s: dropping the session (annotation %s=%q)", s.what, annDropSessions, value)
		_ = s.conn.Close()
		delete(l.sessions[pod.UID], id)
	}
}

// gone is called when a pod has been finalised: its containers stopped.
func (l *liveSessions) gone(pod *v1.Pod) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.dropSeen, pod.UID)
	if n := len(l.forwards[pod.UID]); n > 0 {
		log.Printf("pod %s/%s: deleted; resetting its %d forwarded connection(s)", pod.Namespace, pod.Name, n)
	}
	for cancel := range l.forwards[pod.UID] {
		(*cancel)(errContainerStopped)
	}
	delete(l.forwards, pod.UID)
}
