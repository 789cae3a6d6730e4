//! Session behaviour against a hand-rolled peer over an in-memory pipe.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kubesocks_spdy::frame::{Decoder, Encoder, Frame, FrameError, GoAwayStatus, Limits, RstStatus};
use kubesocks_spdy::{Config, Headers, Session, SessionError, Stream, StreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// The server end of a session, driven frame by frame by the test.
struct Peer {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    decoder: Decoder,
    encoder: Encoder,
    buf: BytesMut,
}

impl Peer {
    fn new(io: DuplexStream) -> Peer {
        let (rd, wr) = tokio::io::split(io);
        Peer {
            rd,
            wr,
            decoder: Decoder::new(Limits::default()),
            encoder: Encoder::new().unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// The next frame, WINDOW_UPDATEs included; `None` at EOF.
    async fn next_any(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            if timeout(T, self.rd.read_buf(&mut self.buf)).await.expect("peer waited too long").unwrap() == 0 {
                return None;
            }
        }
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn next(&mut self) -> Frame {
        loop {
            match self.next_any().await.expect("EOF") {
                Frame::WindowUpdate { .. } => continue,
                frame => return frame,
            }
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).unwrap();
        self.wr.write_all(&out).await.unwrap();
    }

    async fn expect_syn(&mut self) -> (u32, Headers) {
        match self.next().await {
            Frame::SynStream { stream_id, headers, .. } => (stream_id, headers),
            other => panic!("expected SYN_STREAM, got {other:?}"),
        }
    }

    async fn reply(&mut self, stream_id: u32) {
        self.send(Frame::SynReply { stream_id, fin: false, headers: Headers::new() }).await;
    }

    async fn data(&mut self, stream_id: u32, fin: bool, data: &'static [u8]) {
        self.send(Frame::Data { stream_id, fin, data: Bytes::from_static(data) }).await;
    }
}

fn pair(config: Config) -> (Session, Peer) {
    let (client, server) = tokio::io::duplex(64 << 10);
    (Session::client(client, config), Peer::new(server))
}

fn quiet() -> Config {
    Config { keepalive: None, ..Config::default() }
}

fn port_forward(kind: &str) -> Vec<(&str, &str)> {
    vec![("streamType", kind), ("port", "8080"), ("requestID", "0")]
}

fn assert_reset(e: io::Error, says: &str) {
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert!(e.to_string().contains(says), "{e:?} should say {says:?}");
}

#[tokio::test]
async fn opens_two_streams_before_any_reply() {
    let (session, mut peer) = pair(quiet());
    let mut error = session.open(&port_forward("error")).unwrap();
    let mut data = session.open(&port_forward("data")).unwrap();
    assert_eq!((error.id(), data.id()), (1, 3));

    let (first, headers) = peer.expect_syn().await;
    assert_eq!(first, 1);
    assert_eq!(headers.iter().collect::<Vec<_>>(), [("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
    let (second, headers) = peer.expect_syn().await;
    assert_eq!((second, headers.get("streamtype")), (3, Some("data")));

    peer.send(Frame::SynReply { stream_id: 3, fin: false, headers: [("x", "y")].into_iter().collect() }).await;
    peer.reply(1).await;
    assert_eq!(data.reply().await.unwrap().get("x"), Some("y"));
    assert!(error.reply().await.unwrap().is_empty());
    assert_eq!(session.active_streams(), 2);
}

#[tokio::test]
async fn data_and_half_close_both_ways() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.reply(id).await;

    // Client to peer, then the client's half-close.
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(peer.next().await, Frame::Data { stream_id: id, fin: false, data: Bytes::from_static(b"ping") });
    assert_eq!(peer.next().await, Frame::Data { stream_id: id, fin: true, data: Bytes::new() });
    let e = stream.write_all(b"more").await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);

    // Reading still works after our FIN; the peer's FIN is a clean EOF.
    peer.data(id, false, b"pong").await;
    peer.data(id, true, b"!").await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"pong!");

    // Finished both ways: dropping it sends no RST_STREAM.
    drop(stream);
    assert_eq!(session.active_streams(), 0);
    assert!(session.idle_since().is_some());
    peer.send(Frame::Ping { id: 2 }).await;
    assert_eq!(peer.next().await, Frame::Ping { id: 2 });
}

#[tokio::test]
async fn peer_half_close_leaves_writing_open() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.send(Frame::SynReply { stream_id: id, fin: true, headers: Headers::new() }).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty());
    stream.write_all(b"still").await.unwrap();
    assert_eq!(peer.next().await, Frame::Data { stream_id: id, fin: false, data: Bytes::from_static(b"still") });
}

#[tokio::test]
async fn large_writes_are_chunked() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    let sent: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let writer = tokio::spawn(async move {
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    let mut received = Vec::new();
    loop {
        match peer.next().await {
            Frame::Data { stream_id, fin, data } => {
                assert_eq!(stream_id, id);
                assert!(data.len() <= 32 << 10);
                received.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received.len(), 100_000);
    assert!(received.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn rst_stream_is_a_connection_reset() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.reply(id).await;
    peer.data(id, false, b"partial").await;
    peer.send(Frame::RstStream { stream_id: id, status: RstStatus::InternalError }).await;

    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"partial", "what arrived before the reset is delivered");
    assert_reset(stream.read(&mut buf).await.unwrap_err(), "reset by the peer (INTERNAL_ERROR)");
    assert_reset(stream.write_all(b"x").await.unwrap_err(), "INTERNAL_ERROR");

    // A reset before the reply fails the reply.
    let mut refused = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.send(Frame::RstStream { stream_id: id, status: RstStatus::Cancel }).await;
    assert!(matches!(refused.reply().await, Err(StreamError::Reset(RstStatus::Cancel))));

    // Either way, dropping a reset stream sends nothing back.
    drop((stream, refused));
    peer.send(Frame::Ping { id: 4 }).await;
    assert_eq!(peer.next().await, Frame::Ping { id: 4 });
}

#[tokio::test]
async fn dropping_an_unfinished_stream_cancels_it() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    stream.shutdown().await.unwrap();
    assert_eq!(peer.next().await, Frame::Data { stream_id: id, fin: true, data: Bytes::new() });
    drop(stream);
    assert_eq!(peer.next().await, Frame::RstStream { stream_id: id, status: RstStatus::Cancel });
}

#[tokio::test]
async fn transport_eof_resets_every_open_stream() {
    let (session, mut peer) = pair(quiet());
    let mut a = session.open(&port_forward("error")).unwrap();
    let mut b = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    peer.expect_syn().await;
    peer.reply(1).await;
    peer.reply(3).await;
    peer.data(3, false, b"half of it").await;
    drop(peer);

    let mut got = Vec::new();
    assert_reset(b.read_to_end(&mut got).await.unwrap_err(), "the peer closed the connection");
    assert_eq!(got, b"half of it");
    assert_reset(a.read(&mut [0; 8]).await.unwrap_err(), "the peer closed the connection");
    assert_reset(a.write_all(b"x").await.unwrap_err(), "closed");
    assert!(matches!(timeout(T, session.closed()).await.unwrap(), SessionError::PeerClosed));
    assert!(session.is_closed());
    assert!(matches!(session.open(&port_forward("data")), Err(SessionError::PeerClosed)));
    assert!(session.ping().await.is_err());
}

#[tokio::test]
async fn ping_measures_the_round_trip() {
    let (session, mut peer) = pair(quiet());
    assert_eq!(session.rtt(), None);
    let answer = tokio::spawn(async move {
        let Frame::Ping { id } = peer.next().await else { panic!() };
        assert_eq!(id % 2, 1, "client PING ids are odd");
        tokio::time::sleep(Duration::from_millis(20)).await;
        peer.send(Frame::Ping { id }).await;
        peer
    });
    let rtt = session.ping().await.unwrap();
    assert!(rtt >= Duration::from_millis(20), "{rtt:?}");
    assert_eq!(session.rtt(), Some(rtt));
    answer.await.unwrap();
}

#[tokio::test]
async fn peer_pings_are_answered() {
    let (_session, mut peer) = pair(quiet());
    peer.send(Frame::Ping { id: 6 }).await;
    assert_eq!(peer.next().await, Frame::Ping { id: 6 });
}

#[tokio::test]
async fn keepalive_pings_and_times_out() {
    let config = Config {
        keepalive: Some(Duration::from_secs(60)),
        active_keepalive: Duration::from_millis(30),
        active_ping_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    let mut stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;

    // Answered keepalives keep the session up and measure the RTT.
    for _ in 0..3 {
        let Frame::Ping { id } = peer.next().await else { panic!() };
        peer.send(Frame::Ping { id }).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(session.rtt().is_some());
    assert!(!session.is_closed());

    // Then the peer goes silent (but keeps reading).
    let started = tokio::time::Instant::now();
    let silent = tokio::spawn(async move { while peer.next_any().await.is_some() {} });
    let reason = timeout(T, session.closed()).await.unwrap();
    assert!(matches!(reason, SessionError::KeepaliveTimeout(_)), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_reset(stream.read(&mut [0; 4]).await.unwrap_err(), "keepalive");
    silent.await.unwrap();
}

#[tokio::test]
async fn an_idle_session_pings_at_the_keepalive_and_one_with_streams_soon_after_silence() {
    let config = Config {
        keepalive: Some(Duration::from_millis(400)),
        ping_timeout: Duration::from_secs(5),
        active_keepalive: Duration::from_millis(40),
        active_ping_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    let started = tokio::time::Instant::now();
    let Frame::Ping { id } = peer.next().await else { panic!("a PING expected") };
    assert!(started.elapsed() >= Duration::from_millis(400), "an idle session pinged after {:?}", started.elapsed());
    peer.send(Frame::Ping { id }).await;

    let _stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    let opened = tokio::time::Instant::now();
    let Frame::Ping { .. } = peer.next().await else { panic!("a PING expected") };
    assert!(opened.elapsed() < Duration::from_millis(300), "with a stream open it pinged after {:?}", opened.elapsed());
}

#[tokio::test]
async fn a_ping_sent_while_idle_is_waited_for_as_briefly_as_an_active_one_once_a_stream_opens() {
    let config = Config {
        keepalive: Some(Duration::from_millis(30)),
        ping_timeout: Duration::from_secs(60),
        active_keepalive: Duration::from_millis(30),
        active_ping_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    let Frame::Ping { .. } = peer.next().await else { panic!("a PING expected") };
    // Unanswered, as after a laptop's sleep; then a connection comes.
    let _stream = session.open(&port_forward("data")).unwrap();
    let opened = tokio::time::Instant::now();
    let silent = tokio::spawn(async move { while peer.next_any().await.is_some() {} });
    let reason = timeout(T, session.closed()).await.unwrap();
    assert!(matches!(reason, SessionError::KeepaliveTimeout(_)), "{reason}");
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "found dead only {:?} after the stream opened",
        opened.elapsed()
    );
    silent.await.unwrap();
}

#[tokio::test]
async fn an_upload_with_nothing_coming_back_is_not_taken_for_a_dead_path() {
    let config = Config {
        keepalive: Some(Duration::from_secs(60)),
        ping_timeout: Duration::from_secs(30),
        active_keepalive: Duration::from_millis(20),
        active_ping_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.reply(id).await;
    // The peer takes everything and says nothing: PINGs stay unanswered,
    // as when they wait behind the upload at the kubelet.
    let sink = tokio::spawn(async move { while peer.next_any().await.is_some() {} });
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        stream.write_all(&[b'u'; 64 << 10]).await.expect("the upload goes on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!session.is_closed(), "an upload was taken for a dead path: {:?}", session.closed().await);
    drop(stream);
    drop(session);
    sink.await.unwrap();
}

#[tokio::test]
async fn anything_heard_from_the_peer_keeps_the_session_up_even_with_pings_unanswered() {
    let config = Config {
        keepalive: Some(Duration::from_secs(60)),
        active_keepalive: Duration::from_millis(20),
        active_ping_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.reply(id).await;
    // DATA every 30 ms for a second, PINGs never answered.
    for _ in 0..33 {
        peer.data(id, false, b"x").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(!session.is_closed(), "a session that hears DATA was declared dead: {:?}", session.closed().await);
    let mut got = vec![0u8; 33];
    stream.read_exact(&mut got).await.unwrap();
    // Then silence: the unanswered PING ends it.
    let silent = tokio::spawn(async move { while peer.next_any().await.is_some() {} });
    let reason = timeout(T, session.closed()).await.unwrap();
    assert!(matches!(reason, SessionError::KeepaliveTimeout(_)), "{reason}");
    silent.await.unwrap();
}

#[tokio::test]
async fn a_checked_idle_session_pings_at_once_and_ends_if_the_peer_stays_silent() {
    let config = Config {
        keepalive: Some(Duration::from_secs(60)),
        ping_timeout: Duration::from_secs(60),
        active_keepalive: Duration::from_millis(200),
        active_ping_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (session, mut peer) = pair(config);
    // A check answered leaves the session up.
    session.check();
    match timeout(Duration::from_secs(1), peer.next()).await.expect("a PING at once") {
        Frame::Ping { id } => peer.send(Frame::Ping { id }).await,
        other => panic!("expected PING, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!session.is_closed(), "an answered check ended the session");

    // One not answered ends it, long before the idle keepalive would.
    let started = tokio::time::Instant::now();
    session.check();
    let silent = tokio::spawn(async move { while peer.next_any().await.is_some() {} });
    let reason = timeout(Duration::from_secs(2), session.closed()).await.expect("a silent peer went unnoticed");
    assert!(matches!(reason, SessionError::KeepaliveTimeout(_)), "{reason}");
    println!("a checked session found dead after {:?}", started.elapsed());
    silent.abort();
}

#[tokio::test]
async fn a_slow_reader_pushes_back_on_the_peer() {
    let config = Config { stream_receive_buffer: 64 << 10, session_receive_budget: 0, ..quiet() };
    let (client, server) = tokio::io::duplex(16 << 10);
    let session = Session::client(client, config);
    let mut peer = Peer::new(server);
    let mut stream = session.open(&port_forward("data")).unwrap();
    let (id, _) = peer.expect_syn().await;
    peer.reply(id).await;

    const TOTAL: usize = 4 << 20;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let flood = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 16 << 10]);
        for _ in 0..TOTAL / chunk.len() {
            peer.send(Frame::Data { stream_id: id, fin: false, data: chunk.clone() }).await;
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        peer.send(Frame::Data { stream_id: id, fin: true, data: Bytes::new() }).await;
        peer
    });

    // Nobody reads: the peer gets stuck after roughly buffer + pipe + one read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stuck_at = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sent.load(Ordering::SeqCst), stuck_at, "the peer must be blocked");
    assert!(stuck_at <= 160 << 10, "the peer got {stuck_at} bytes out");

    let mut received = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = timeout(T, stream.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert_eq!(received, TOTAL);
    let mut peer = flood.await.unwrap();
    // Consumed bytes were announced, per stream and for the session.
    let mut updates = Vec::new();
    drop(stream);
    loop {
        match peer.next_any().await.unwrap() {
            Frame::WindowUpdate { stream_id, .. } => updates.push(stream_id),
            Frame::RstStream { .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(updates.contains(&0) && updates.contains(&id), "{updates:?}");
}

/// Two streams `a` and `b` on one session, both answered.
async fn two_streams(config: Config) -> (Session, Peer, Stream, Stream) {
    let (client, server) = tokio::io::duplex(16 << 10);
    let session = Session::client(client, config);
    let mut peer = Peer::new(server);
    let a = session.open(&port_forward("data")).unwrap();
    let b = session.open(&port_forward("data")).unwrap();
    for _ in 0..2 {
        let (id, _) = peer.expect_syn().await;
        peer.reply(id).await;
    }
    (session, peer, a, b)
}

/// Sends `total` bytes on stream `a` in 16 KiB frames, then `b"hello"` on
/// stream `b`; returns the peer once all is sent.
fn flood_then_hello(mut peer: Peer, a: u32, total: usize, b: u32) -> tokio::task::JoinHandle<Peer> {
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 16 << 10]);
        for _ in 0..total / chunk.len() {
            peer.send(Frame::Data { stream_id: a, fin: false, data: chunk.clone() }).await;
        }
        peer.data(b, false, b"hello").await;
        peer
    })
}

#[tokio::test]
async fn a_stream_whose_reader_stops_holds_up_no_other_while_the_session_budget_lasts() {
    let config = Config { stream_receive_buffer: 64 << 10, session_receive_budget: 1 << 20, ..quiet() };
    let (_session, peer, mut a, mut b) = two_streams(config).await;
    const UNREAD: usize = 768 << 10;
    let flood = flood_then_hello(peer, a.id(), UNREAD, b.id());

    // Nobody reads `a`, yet `b` gets its bytes at once.
    let mut hello = [0u8; 5];
    timeout(Duration::from_secs(1), b.read_exact(&mut hello))
        .await
        .expect("b's DATA is held up behind a's unread 768 KiB")
        .unwrap();
    assert_eq!(&hello, b"hello");
    let _peer = flood.await.unwrap();
    // And `a` loses nothing.
    let mut got = vec![0u8; UNREAD];
    timeout(T, a.read_exact(&mut got)).await.unwrap().unwrap();
    assert!(got.iter().all(|&x| x == 7));
}

#[tokio::test]
async fn once_the_budget_is_spent_a_stream_whose_reader_took_nothing_for_the_stall_timeout_is_reset() {
    const STALL: Duration = Duration::from_millis(300);
    let config =
        Config { stream_receive_buffer: 64 << 10, session_receive_budget: 256 << 10, stall_timeout: STALL, ..quiet() };
    let (_session, peer, mut a, mut b) = two_streams(config).await;
    let started = tokio::time::Instant::now();
    let flood = flood_then_hello(peer, a.id(), 2 << 20, b.id());

    let mut hello = [0u8; 5];
    timeout(T, b.read_exact(&mut hello)).await.expect("b is held up for good").unwrap();
    let waited = started.elapsed();
    println!("b held up for {waited:?} behind a stream that read nothing (stall timeout {STALL:?})");
    assert_eq!(&hello, b"hello");
    assert!(waited >= STALL, "a was reset before it had stalled for {STALL:?} ({waited:?})");
    assert_reset(a.read(&mut [0u8; 16]).await.unwrap_err(), "took nothing");

    let mut peer = flood.await.unwrap();
    match peer.next().await {
        Frame::RstStream { stream_id, status } if stream_id == a.id() => assert_eq!(status, RstStatus::Cancel),
        other => panic!("expected a's RST_STREAM, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_stream_that_holds_up_a_stream_in_use_is_reset_after_the_short_holdup_timeout() {
    const HOLDUP: Duration = Duration::from_millis(200);
    let config = Config {
        stream_receive_buffer: 64 << 10,
        session_receive_budget: 256 << 10,
        holdup_timeout: HOLDUP,
        stall_timeout: Duration::from_secs(60),
        ..quiet()
    };
    let (_session, mut peer, mut a, mut b) = two_streams(config).await;
    // `b` is a connection in use: it has sent a request.
    b.write_all(b"GET").await.unwrap();
    match peer.next().await {
        Frame::Data { stream_id, .. } => assert_eq!(stream_id, b.id()),
        other => panic!("{other:?}"),
    }
    let started = tokio::time::Instant::now();
    let flood = flood_then_hello(peer, a.id(), 2 << 20, b.id());

    let mut hello = [0u8; 5];
    timeout(Duration::from_secs(5), b.read_exact(&mut hello))
        .await
        .expect("b waited for the 60 s stall timeout, not the holdup timeout")
        .unwrap();
    let waited = started.elapsed();
    println!("b, in use, held up for {waited:?} behind a stream that read nothing (holdup timeout {HOLDUP:?})");
    assert!(waited >= HOLDUP, "a was reset before it had stalled for {HOLDUP:?} ({waited:?})");
    assert_reset(a.read(&mut [0u8; 16]).await.unwrap_err(), "took nothing");
    flood.await.unwrap();
}

#[tokio::test]
async fn a_stream_in_use_that_comes_while_the_reader_waits_shortens_the_wait() {
    let config = Config {
        stream_receive_buffer: 64 << 10,
        session_receive_budget: 256 << 10,
        holdup_timeout: Duration::from_millis(200),
        stall_timeout: Duration::from_secs(60),
        ..quiet()
    };
    let (_session, peer, mut a, mut b) = two_streams(config).await;
    let flood = flood_then_hello(peer, a.id(), 2 << 20, b.id());
    // The reader pauses behind `a` with nobody in use waiting: the long timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut hello = [0u8; 5];
    assert!(timeout(Duration::from_millis(100), b.read_exact(&mut hello)).await.is_err(), "a was reset already");
    // Then `b` is used: `a` now holds up a connection, and is reset soon.
    let asked = tokio::time::Instant::now();
    b.write_all(b"GET").await.unwrap();
    timeout(Duration::from_secs(5), b.read_exact(&mut hello))
        .await
        .expect("b is held up for the stall timeout")
        .unwrap();
    println!("b waited {:?} once in use", asked.elapsed());
    assert_reset(a.read(&mut [0u8; 16]).await.unwrap_err(), "took nothing");
    flood.await.unwrap();
}

#[tokio::test]
async fn a_reader_that_keeps_taking_is_never_reset_however_slow() {
    let config = Config {
        stream_receive_buffer: 64 << 10,
        session_receive_budget: 0,
        stall_timeout: Duration::from_millis(300),
        ..quiet()
    };
    let (_session, peer, mut a, mut b) = two_streams(config).await;
    const TOTAL: usize = 1 << 20;
    let flood = flood_then_hello(peer, a.id(), TOTAL, b.id());
    // 16 KiB every 100 ms for 1.6 s: slow, but never stopped for the stall timeout.
    let mut got = 0;
    let mut buf = vec![0u8; 16 << 10];
    while got < TOTAL {
        got += timeout(T, a.read(&mut buf)).await.unwrap().expect("a slow reader is not reset");
        if got < 256 << 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut hello = [0u8; 5];
    timeout(T, b.read_exact(&mut hello)).await.unwrap().unwrap();
    flood.await.unwrap();
}

#[tokio::test]
async fn a_slow_writer_is_held_back_and_control_frames_overtake_data() {
    let config = Config { write_queue: 128 << 10, ..quiet() };
    let (client, server) = tokio::io::duplex(16 << 10);
    let session = Session::client(client, config);
    let mut peer = Peer::new(server);
    let mut stream = session.open(&port_forward("data")).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..1024 {
            stream.write_all(&[1u8; 1024]).await.unwrap();
            counter.fetch_add(1024, Ordering::SeqCst);
        }
        stream.shutdown().await.unwrap();
        stream
    });

    // The peer does not read yet: the writer waits once the queue is full.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stuck_at = accepted.load(Ordering::SeqCst);
    assert!(stuck_at <= 128 << 10, "{stuck_at} bytes accepted");

    // A PING from the peer is answered ahead of the queued DATA.
    peer.send(Frame::Ping { id: 2 }).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut data_before_ping = 0;
    let mut data_total = 0;
    let mut seen_ping = false;
    loop {
        match peer.next().await {
            Frame::SynStream { .. } => {}
            Frame::Ping { id: 2 } => seen_ping = true,
            Frame::Data { data, fin, .. } => {
                data_total += data.len();
                if !seen_ping {
                    data_before_ping += data.len();
                }
                if fin {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seen_ping);
    assert!(data_before_ping < 100 << 10, "{data_before_ping} bytes of DATA went before the PING echo");
    assert_eq!(data_total, 1 << 20);
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn streams_opened_by_the_peer_are_refused() {
    let (_session, mut peer) = pair(quiet());
    peer.send(Frame::SynStream {
        stream_id: 2,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(),
    })
    .await;
    assert_eq!(peer.next().await, Frame::RstStream { stream_id: 2, status: RstStatus::RefusedStream });
}

#[tokio::test]
async fn goaway_stops_new_streams_and_cuts_unaccepted_ones() {
    let (session, mut peer) = pair(quiet());
    let mut accepted = session.open(&port_forward("error")).unwrap();
    let mut cut = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    peer.expect_syn().await;
    peer.reply(1).await;
    peer.send(Frame::Settings { clear: false, settings: vec![] }).await;
    peer.send(Frame::WindowUpdate { stream_id: 1, delta: 1 }).await;
    peer.send(Frame::GoAway { last_good_stream_id: 1, status: GoAwayStatus::Ok }).await;

    assert!(matches!(cut.reply().await, Err(StreamError::GoneAway { last_good_stream_id: 1 })));
    assert_reset(cut.read(&mut [0; 1]).await.unwrap_err(), "GOAWAY");
    assert!(session.is_closed());
    assert!(matches!(session.open(&port_forward("data")), Err(SessionError::GoAway { last_good_stream_id: 1, .. })));

    // The accepted stream carries on to its end.
    peer.data(1, true, b"bye").await;
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
    drop(peer);
    assert!(matches!(timeout(T, session.closed()).await.unwrap(), SessionError::GoAway { .. }));
}

#[tokio::test]
async fn close_sends_goaway() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    session.close();
    assert_eq!(peer.next().await, Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::Ok });
    assert!(peer.next_any().await.is_none(), "then the transport is shut down");
    assert!(matches!(timeout(T, session.closed()).await.unwrap(), SessionError::Closed));
    assert_reset(stream.read(&mut [0; 1]).await.unwrap_err(), "closed");
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    let (session, mut peer) = pair(quiet());
    let stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    drop(session);
    peer.send(Frame::Ping { id: 2 }).await;
    assert_eq!(peer.next().await, Frame::Ping { id: 2 }, "a stream keeps the session alive");
    drop(stream);
    assert_eq!(peer.next().await, Frame::RstStream { stream_id: 1, status: RstStatus::Cancel });
    assert!(matches!(peer.next().await, Frame::GoAway { .. }));
}

#[tokio::test]
async fn waiting_for_the_end_does_not_keep_a_session_open() {
    let (session, mut peer) = pair(quiet());
    let ended = tokio::spawn(session.ended());
    drop(session);
    assert!(matches!(peer.next().await, Frame::GoAway { .. }), "the last handle gone, the session closes");
    let reason = timeout(T, ended).await.expect("the end is told").unwrap();
    assert!(matches!(reason, SessionError::Closed), "{reason}");
}

#[tokio::test]
async fn invalid_headers_are_refused_locally() {
    let (session, _peer) = pair(quiet());
    for headers in [vec![("host", "x")], vec![("", "x")], vec![("a", "b\0c")]] {
        assert!(matches!(session.open(&headers), Err(SessionError::InvalidHeader(_))), "{headers:?}");
    }
    assert_eq!(session.active_streams(), 0);
}

#[tokio::test]
async fn a_protocol_error_ends_the_session() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    peer.wr.write_all(b"\x80\x02\x00\x01\x00\x00\x00\x00").await.unwrap();
    let reason = timeout(T, session.closed()).await.unwrap();
    assert!(matches!(reason, SessionError::Protocol(_)), "{reason}");
    assert_reset(stream.read(&mut [0; 1]).await.unwrap_err(), "unsupported SPDY version 2");
}

#[tokio::test]
async fn a_header_block_that_expands_ends_the_session() {
    let (session, mut peer) = pair(quiet());
    let mut stream = session.open(&port_forward("data")).unwrap();
    peer.expect_syn().await;
    // One 131,000-byte name with a value of 131,000 NULs, which would decode
    // to 131,001 copies of the name: a SYN_REPLY for a stream never opened,
    // in the peer's first zlib block (a plain zlib stream needs no dictionary).
    let mut raw = Vec::new();
    for (len, byte) in [(1, None), (131_000, Some(b'a')), (131_000, Some(0))] {
        raw.extend_from_slice(&(len as u32).to_be_bytes());
        if let Some(byte) = byte {
            raw.resize(raw.len() + len, byte);
        }
    }
    let mut zlib = flate2::Compress::new(flate2::Compression::default(), true);
    let mut block = Vec::with_capacity(4096);
    zlib.compress_vec(&raw, &mut block, flate2::FlushCompress::Sync).unwrap();
    assert_eq!(zlib.total_in(), raw.len() as u64);
    assert!(block.len() < 1024, "{} bytes compressed", block.len());
    let mut frame = vec![0x80, 0x03, 0x00, 0x02];
    frame.extend_from_slice(&(4 + block.len() as u32).to_be_bytes());
    frame.extend_from_slice(&99u32.to_be_bytes());
    frame.extend_from_slice(&block);
    peer.wr.write_all(&frame).await.unwrap();

    let reason = timeout(T, session.closed()).await.unwrap();
    assert!(matches!(reason, SessionError::Protocol(FrameError::HeaderListTooLarge { .. })), "{reason}");
    assert_reset(stream.read(&mut [0; 1]).await.unwrap_err(), "header block decodes to more than 262144 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams() {
    let (client, server) = tokio::io::duplex(64 << 10);
    let session = Session::client(client, quiet());
    // An echo peer: replies to every stream and sends every byte back.
    let echo = tokio::spawn(async move {
        let mut peer = Peer::new(server);
        let mut finished = 0;
        while finished < 200 {
            match peer.next().await {
                Frame::SynStream { stream_id, .. } => peer.reply(stream_id).await,
                Frame::Data { stream_id, fin, data } => {
                    finished += usize::from(fin);
                    peer.send(Frame::Data { stream_id, fin, data }).await;
                }
                Frame::RstStream { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        peer
    });
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = session.open(&port_forward("data")).unwrap();
            let message: Vec<u8> = (0..(i * 97) % 50_000).map(|j| (i ^ j) as u8).collect();
            let (mut rd, mut wr) = tokio::io::split(&mut stream);
            let send = async {
                wr.write_all(&message).await.unwrap();
                wr.shutdown().await.unwrap();
            };
            let mut echoed = Vec::new();
            let recv = rd.read_to_end(&mut echoed);
            let ((), read) = tokio::join!(send, recv);
            read.unwrap();
            assert_eq!(echoed, message, "stream {i}");
        }));
    }
    for task in tasks {
        timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    }
    echo.await.unwrap();
    assert_eq!(session.active_streams(), 0);
}
