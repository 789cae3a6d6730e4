//! The DNS helper: a small DNS server (UDP and TCP on one loopback address)
//! that answers cluster names from the same watch caches as the proxy, so
//! that an app that resolves names itself (and then connects with plain
//! `socks5://` to the address) can reach Services too: the proxy maps
//! ClusterIPs and pod IPs back to their objects.
//!
//! It answers A/AAAA (a Service's ClusterIPs, a headless Service's ready
//! endpoints, a pod's IPs), SRV for named ports and CNAME for ExternalName
//! Services; NXDOMAIN for cluster names with nothing behind them and REFUSED
//! for names outside the cluster: it never resolves the internet. Which name
//! means what is decided by the pure rules in [`crate::route`]; this module
//! only speaks DNS, through hickory-server. It has no authentication, so it
//! only ever listens on loopback ([`crate::EngineError::OpenDnsListener`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use crate::dial::Dialer;
use crate::route::records::{DnsQuery, Records};
use crate::route::{self, RefusalKind};

/// How long clients may keep an answer: short, since pods come and go.
pub(crate) const TTL: u32 = 5;

/// How long a question may wait for the caches (a namespace named for the
/// first time is set up first) before it is answered SERVFAIL. Below the
/// usual 5 s of a stub resolver, which then asks again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);

/// A TCP client that sends no question for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Answers waiting to be written on one TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// Binds UDP and TCP on the same address. For port 0 the system picks the
/// UDP port; its TCP twin may be taken, so a few picks are tried.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut attempts = if addr.port() == 0 { 10 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == std::io::ErrorKind::AddrInUse => attempts -= 1,
            Err(e) => return Err(e),
        }
    }
}

/// Starts serving on the bound sockets. The returned server stops when
/// dropped or shut down.
pub(crate) fn serve(dialer: Arc<Dialer>, udp: UdpSocket, tcp: TcpListener) -> hickory_server::Server<DnsHelper> {
    let mut server = hickory_server::Server::new(DnsHelper { dialer });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
    server
}

/// Answers each question from a snapshot of the engine's caches.
pub(crate) struct DnsHelper {
    dialer: Arc<Dialer>,
}

#[async_trait::async_trait]
impl RequestHandler for DnsHelper {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(512));
            edns
        });
        let (code, answers) = self.answer(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        // Authoritative for the cluster's names; it recurses for no one.
        metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let message = builder.build(metadata, answers.iter(), [], [], []);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(client = %request.src(), error = %e, "sending a DNS answer failed");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

impl DnsHelper {
    /// The response code and answer records for a request.
    async fn answer(&self, request: &Request) -> (ResponseCode, Vec<Record>) {
        if request.metadata.message_type != MessageType::Query {
            return (ResponseCode::FormErr, Vec::new());
        }
        if request.metadata.op_code != OpCode::Query {
            return (ResponseCode::NotImp, Vec::new());
        }
        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            return (ResponseCode::FormErr, Vec::new());
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return (ResponseCode::Refused, Vec::new());
        }
        let asked = query.name().to_string();
        let dialer = &self.dialer;
        let question = DnsQuery::read(&asked, dialer.rules());
        let snapshot = match tokio::time::timeout(ANSWER_TIMEOUT, dialer.cache().snapshot_for(&question.query)).await {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(e)) => {
                tracing::warn!(name = %asked, error = %e, "DNS question not answered: the caches failed");
                return (ResponseCode::ServFail, Vec::new());
            }
            Err(_) => {
                tracing::warn!(name = %asked, "DNS question not answered: the caches took over {ANSWER_TIMEOUT:?}");
                return (ResponseCode::ServFail, Vec::new());
            }
        };
        let owner = query.original().name().clone();
        match route::records::records(question, dialer.rules(), &snapshot) {
            Ok(records) => (ResponseCode::NoError, answer_records(&owner, query.query_type(), &records)),
            Err(refusal) => {
                tracing::debug!(name = %asked, %refusal, "DNS question refused");
                match refusal.kind() {
                    RefusalKind::NotAllowed => (ResponseCode::Refused, Vec::new()),
                    RefusalKind::Unreachable | RefusalKind::Refused => (ResponseCode::NXDomain, Vec::new()),
                }
            }
        }
    }
}

/// The records of `found` that answer a question of type `asked` about
/// `owner`. None (NODATA) when the name has no record of that type.
fn answer_records(owner: &Name, asked: RecordType, found: &Records) -> Vec<Record> {
    let record = |rdata: RData| Record::from_rdata(owner.clone(), TTL, rdata);
    // An alias answers every type: the client follows it.
    if let Some(alias) = &found.alias {
        return Name::from_ascii(format!("{alias}.")).map(|n| vec![record(RData::CNAME(CNAME(n)))]).unwrap_or_default();
    }
    let any = asked == RecordType::ANY;
    let mut answers = Vec::new();
    for ip in &found.addresses {
        match ip {
            IpAddr::V4(v4) if any || asked == RecordType::A => answers.push(record(RData::A(A(*v4)))),
            IpAddr::V6(v6) if any || asked == RecordType::AAAA => answers.push(record(RData::AAAA(AAAA(*v6)))),
            _ => {}
        }
    }
    if any || asked == RecordType::SRV {
        // Equal weights: spread clients over every endpoint.
        let weight = u16::try_from(100 / found.srv.len().max(1)).unwrap_or(1).max(1);
        for srv in &found.srv {
            if let Ok(target) = Name::from_ascii(format!("{}.", srv.target)) {
                answers.push(record(RData::SRV(SRV::new(0, weight, srv.port, target))));
            }
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::records::Srv;

    fn owner() -> Name {
        Name::from_ascii("web.default.svc.cluster.local.").unwrap()
    }

    fn types(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{} {}", r.record_type(), &r.data)).collect()
    }

    fn found() -> Records {
        Records {
            addresses: vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            srv: vec![Srv { port: 80, target: "web.default.svc.cluster.local".into() }],
            alias: None,
        }
    }

    #[test]
    fn each_type_gets_its_own_records_and_other_types_none() {
        assert_eq!(types(&answer_records(&owner(), RecordType::A, &found())), ["A 10.96.0.10"]);
        assert_eq!(types(&answer_records(&owner(), RecordType::AAAA, &found())), ["AAAA fd00::10"]);
        assert_eq!(
            types(&answer_records(&owner(), RecordType::SRV, &found())),
            ["SRV 0 100 80 web.default.svc.cluster.local."]
        );
        for other in [RecordType::MX, RecordType::TXT, RecordType::PTR, RecordType::CNAME] {
            assert!(answer_records(&owner(), other, &found()).is_empty(), "{other}");
        }
        assert_eq!(answer_records(&owner(), RecordType::ANY, &found()).len(), 3);
        assert!(answer_records(&owner(), RecordType::A, &Records::default()).is_empty());
    }

    #[test]
    fn answers_carry_the_short_ttl_and_the_asked_name() {
        for record in answer_records(&owner(), RecordType::ANY, &found()) {
            assert_eq!(record.ttl, TTL);
            assert_eq!(&record.name, &owner());
        }
    }

    #[test]
    fn an_alias_answers_every_type_with_a_cname() {
        let alias = Records { alias: Some("db.example.com".into()), ..Default::default() };
        for asked in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
            assert_eq!(types(&answer_records(&owner(), asked, &alias)), ["CNAME db.example.com."]);
        }
    }

    #[test]
    fn srv_weights_are_equal_and_never_zero() {
        let many = Records {
            srv: (0..150).map(|i| Srv { port: 5432, target: format!("db-{i}.db.shop.svc.cluster.local") }).collect(),
            ..Default::default()
        };
        let answers = answer_records(&owner(), RecordType::SRV, &many);
        assert_eq!(answers.len(), 150);
        assert!(answers.iter().all(|r| matches!(&r.data, RData::SRV(s) if s.weight == 1)));
    }

    #[tokio::test]
    async fn udp_and_tcp_share_one_port_even_when_the_system_picks_it() {
        let (udp, tcp) = bind(crate::loopback(0)).await.unwrap();
        assert_ne!(udp.local_addr().unwrap().port(), 0);
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        // A port in use is an error, not another port.
        let e = bind(udp.local_addr().unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    }
}
