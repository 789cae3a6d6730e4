// Command go-peer is a SPDY/3.1 server built on github.com/moby/spdystream,
// the implementation behind the Kubernetes kubelet's port-forward endpoint.
// The Rust interop tests (../go_interop.rs) build and run it.
//
// It prints "LISTEN <addr>" on stdout, serves every TCP connection as one
// SPDY session, and exits when stdin closes. Each stream does what its
// "x-mode" header says:
//
//	echo     reply with the request headers, copy the stream back to itself, then FIN
//	download reply, write x-size bytes (byte i is i%251), then FIN
//	reset    reply, read x-size bytes, then RST_STREAM
//	ping     reply, PING the client, write "pong" if it answered, then FIN
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"

	"github.com/moby/spdystream"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	session, err := spdystream.NewConnection(conn, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	session.Serve(func(stream *spdystream.Stream) { handle(session, stream) })
}

// handle runs on spdystream's frame worker, so it must not block.
func handle(session *spdystream.Connection, stream *spdystream.Stream) {
	headers := stream.Headers()
	size, _ := strconv.Atoi(headers.Get("x-size"))
	switch headers.Get("x-mode") {
	case "echo":
		reply := http.Header{}
		for name, values := range headers {
			reply["Echo-"+name] = values
		}
		if stream.SendReply(reply, false) != nil {
			return
		}
		go func() {
			_, _ = io.Copy(stream, stream)
			_ = stream.Close()
		}()
	case "download":
		if stream.SendReply(http.Header{}, false) != nil {
			return
		}
		go func() {
			buf := make([]byte, 32*1024)
			for sent := 0; sent < size; {
				n := min(len(buf), size-sent)
				for i := range n {
					buf[i] = byte((sent + i) % 251)
				}
				if _, err := stream.Write(buf[:n]); err != nil {
					return
				}
				sent += n
			}
			_ = stream.Close()
		}()
	case "reset":
		if stream.SendReply(http.Header{}, false) != nil {
			return
		}
		go func() {
			_, _ = io.ReadFull(stream, make([]byte, size))
			_ = stream.Reset()
		}()
	case "ping":
		if stream.SendReply(http.Header{}, false) != nil {
			return
		}
		go func() {
			if _, err := session.Ping(); err == nil {
				_, _ = stream.Write([]byte("pong"))
			}
			_ = stream.Close()
		}()
	default:
		_ = stream.Refuse()
	}
}
