module kubesocks/spdy-go-peer

go 1.24

require github.com/moby/spdystream v0.5.1
