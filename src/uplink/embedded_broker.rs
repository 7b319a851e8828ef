//! The embedded MQTT broker (rumqttd, feature `embedded-broker`, on by default).
//!
//! Owns one rumqttd instance listening on a loopback address, for `mqtt.url = "embedded"` and
//! `meterd demo`. rumqttd blocks the thread that starts it and has no shutdown API, so it runs on
//! its own named std thread for the rest of the process; sessions and retained messages live in
//! memory only. It is a convenience for demos and single-box setups, never the billing core's
//! broker. Readiness is proven by a real MQTT CONNECT/CONNACK exchange (a bare TCP probe would make
//! rumqttd log an ERROR for a connection closed before CONNECT).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address cannot be bound (in use, or not local).
    #[error("embedded broker: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// rumqttd refused its configuration.
    #[error("embedded broker: configuration: {0}")]
    Config(String),
    /// The broker thread could not be started.
    #[error("embedded broker: cannot start its thread: {0}")]
    Thread(std::io::Error),
    /// No CONNACK within the deadline.
    #[error("embedded broker on {addr} did not answer an MQTT CONNECT within {waited:?}")]
    NotReady {
        /// The address.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
    },
}

/// A running embedded broker. Dropping it does not stop the broker (rumqttd cannot be stopped);
/// it lives until the process exits.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Start rumqttd on `listen` (MQTT 3.1.1) and wait until it answers a CONNECT.
    /// `max_payload` bounds the packet size the broker accepts.
    pub fn start(listen: SocketAddr, max_payload: usize) -> Result<Self, BrokerError> {
        // rumqttd only logs a failed bind on its listener thread; find out here instead.
        drop(
            TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
                addr: listen,
                source,
            })?,
        );
        let text = format!(
            r#"
id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "{listen}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 5000
max_payload_size = {max_payload}
max_inflight_count = 100
dynamic_filters = true
"#
        );
        let config: rumqttd::Config =
            toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker stopped: {e}");
                }
            })
            .map_err(BrokerError::Thread)?;
        let waited = Duration::from_secs(5);
        let deadline = Instant::now() + waited;
        while Instant::now() < deadline {
            if mqtt_ping(listen).unwrap_or(false) {
                tracing::info!(%listen, "embedded MQTT broker ready");
                return Ok(Self { addr: listen });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(BrokerError::NotReady {
            addr: listen,
            waited,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// CONNECT (3.1.1, clean session, client id `meterd-probe`), expect CONNACK accepted, DISCONNECT.
fn mqtt_ping(addr: SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let id = b"meterd-probe";
    let mut pkt = vec![0x10, (10 + 2 + id.len()) as u8];
    pkt.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0a]);
    pkt.extend_from_slice(&(id.len() as u16).to_be_bytes());
    pkt.extend_from_slice(id);
    s.write_all(&pkt)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    let ok = ack == [0x20, 0x02, 0x00, 0x00];
    s.write_all(&[0xe0, 0x00])?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_answers_connect_and_refuses_a_busy_port() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let b = EmbeddedBroker::start(port, 1 << 20).unwrap();
        assert!(mqtt_ping(b.addr()).unwrap());
        assert!(matches!(
            EmbeddedBroker::start(port, 1 << 20),
            Err(BrokerError::Bind { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_uplink_drains_into_the_embedded_broker() {
        use crate::config::MqttConfig;
        use crate::ingest::{MemoryOutbox, Outbox};
        use crate::uplink::Uplink;
        use std::sync::{Arc, Mutex};

        let listen = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        EmbeddedBroker::start(listen, 1 << 20).unwrap();
        let outbox = Arc::new(Mutex::new(MemoryOutbox::new()));
        for seq in 1..=50 {
            outbox
                .lock()
                .unwrap()
                .push("m1", seq, &format!("gw/m1/{seq}"), vec![b'x'; 64 * 1024]);
        }
        let cfg = MqttConfig {
            url: "embedded".into(),
            embedded_listen: listen,
            ..MqttConfig::default()
        };
        let (uplink, handle) = Uplink::new("gw", cfg, outbox.clone()).unwrap();
        let task = tokio::spawn(uplink.run());
        let t0 = Instant::now();
        while !outbox.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            outbox.lock().unwrap().pending(None, 1).unwrap().is_empty(),
            "{:?}",
            handle.snapshot()
        );
        assert_eq!(handle.snapshot().acked, 50);
        handle.shutdown();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
