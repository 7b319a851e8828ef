//! The MQTT connection the uplink drives: rumqttc's MQTT 3.1.1 client or its MQTT 5 client
//! (`rumqttc::v5`), behind the few operations the uplink uses, so that its bookkeeping (packet
//! id → outbox row, resend after every CONNACK, offline status) is written once.
//!
//! Both clients are rumqttc's; the two protocol versions have separate types there (events,
//! options, errors, session state), so this module maps them onto one small vocabulary.

use rumqttc::v5;
use rumqttc::{ConnectReturnCode, ConnectionError, Event, Outgoing, Packet, QoS};

use super::options::UplinkConfigError;
use crate::config::{MqttConfig, MqttProtocol};

/// The last will: the retained offline status.
#[derive(Debug, Clone)]
pub(super) struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What the uplink reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkEvent {
    /// Connected (the broker accepted the CONNECT).
    ConnAck {
        session_present: bool,
        /// MQTT 5: the most unacknowledged QoS 1 publishes the broker accepts.
        receive_max: Option<u16>,
    },
    /// A PUBACK; `rejected` says why when an MQTT 5 broker refused the publish.
    PubAck { pkid: u16, rejected: Option<String> },
    /// A PUBLISH went out with this packet id.
    Published(u16),
    /// rumqttc parked a PUBLISH on a packet-id collision until that id is acknowledged.
    AwaitAck(u16),
    /// A PUBLISH from the broker (a subscription's message), with its retain flag.
    Incoming {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// A SUBACK; `refused` when the broker refused the subscription.
    SubAck { refused: bool },
    /// Our DISCONNECT went out.
    Disconnected,
    /// Anything else (pings, SUBACKs…).
    Other,
}

/// A connection failure, described for the operator.
#[derive(Debug, Clone)]
pub(super) struct LinkError {
    /// What went wrong, with the configuration key to look at where there is one.
    pub text: String,
    /// The broker refused the connection (credentials, client id…) rather than being unreachable.
    pub refused: bool,
}

/// The handle that queues requests (publishes, DISCONNECT) for the event loop.
pub(super) enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The event loop: owns the connection; polled by the uplink alone.
pub(super) enum Events {
    /// MQTT 3.1.1. (Both event loops are boxed: they are large and of different sizes.)
    V311 {
        events: Box<rumqttc::EventLoop>,
        inflight: u16,
    },
    /// MQTT 5.
    V5 {
        events: Box<v5::EventLoop>,
        inflight: u16,
    },
}

/// A client for `config` and its event loop (not connected yet: the first [`Events::poll`]
/// connects).
pub(super) fn connect(
    config: &MqttConfig,
    gateway: &str,
    will: Will,
) -> Result<(Client, Events), UplinkConfigError> {
    // One more packet id than our window: with in-order PUBACKs ids never collide.
    let inflight = config.max_inflight.saturating_add(1);
    Ok(match config.protocol {
        MqttProtocol::V311 => {
            let opts = config.mqtt_options(gateway, v311_will(will))?;
            let cap = opts.request_channel_capacity();
            let (client, mut events) = rumqttc::AsyncClient::new(opts, cap);
            let mut net = events.network_options();
            net.set_connection_timeout(config.connect_timeout.as_secs().max(1));
            // Publishes and PUBACK-driven refills go out at once instead of waiting for Nagle.
            net.set_tcp_nodelay(true);
            events.set_network_options(net);
            (
                Client::V311(client),
                Events::V311 {
                    events: Box::new(events),
                    inflight,
                },
            )
        }
        MqttProtocol::V5 => {
            let opts = config.mqtt5_options(gateway, v5_will(will))?;
            let cap = opts.request_channel_capacity();
            let (client, events) = v5::AsyncClient::new(opts, cap);
            (
                Client::V5(client),
                Events::V5 {
                    events: Box::new(events),
                    inflight,
                },
            )
        }
    })
}

impl Client {
    /// Hands a QoS 1 publish to the event loop (no waiting); an error when its queue is full.
    pub(super) fn try_publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a QoS 1 subscription to `filter` (no waiting); an error when its queue is full.
    pub(super) fn try_subscribe(&self, filter: String) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a DISCONNECT; `false` if the queue is closed or full.
    pub(super) fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

impl Events {
    /// The next event (connecting first when not connected).
    pub(super) async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Events::V311 { events, .. } => events
                .poll()
                .await
                .map(|ev| match ev {
                    Event::Incoming(Packet::ConnAck(ack)) => LinkEvent::ConnAck {
                        session_present: ack.session_present,
                        receive_max: None,
                    },
                    Event::Incoming(Packet::PubAck(p)) => LinkEvent::PubAck {
                        pkid: p.pkid,
                        rejected: None,
                    },
                    Event::Incoming(Packet::Publish(p)) => LinkEvent::Incoming {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    },
                    Event::Incoming(Packet::SubAck(a)) => LinkEvent::SubAck {
                        refused: a
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                    },
                    Event::Outgoing(o) => outgoing(o),
                    Event::Incoming(_) => LinkEvent::Other,
                })
                .map_err(|e| describe_v311(&e)),
            Events::V5 { events, .. } => events
                .poll()
                .await
                .map(|ev| match ev {
                    v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(ack)) => {
                        LinkEvent::ConnAck {
                            session_present: ack.session_present,
                            receive_max: ack.properties.and_then(|p| p.receive_max),
                        }
                    }
                    v5::Event::Incoming(v5::mqttbytes::v5::Packet::PubAck(p)) => {
                        LinkEvent::PubAck {
                            pkid: p.pkid,
                            rejected: puback_refusal(&p),
                        }
                    }
                    v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p)) => {
                        LinkEvent::Incoming {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        }
                    }
                    v5::Event::Incoming(v5::mqttbytes::v5::Packet::SubAck(a)) => {
                        LinkEvent::SubAck {
                            refused: a.return_codes.iter().any(|c| {
                                !matches!(c, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))
                            }),
                        }
                    }
                    v5::Event::Outgoing(o) => outgoing(o),
                    v5::Event::Incoming(_) => LinkEvent::Other,
                })
                .map_err(|e| describe_v5(&e)),
        }
    }

    /// Forgets whatever the client kept from the last connection: queued requests, packets in
    /// flight, buffered events and the last packet id (the uplink resends from the outbox).
    /// `receive_max` (MQTT 5's CONNACK) bounds the new session's packet ids.
    pub(super) fn reset_session(&mut self, receive_max: Option<u16>) {
        match self {
            Events::V311 { events, inflight } => {
                events.pending.clear();
                events.state =
                    rumqttc::MqttState::new(*inflight, events.mqtt_options.manual_acks());
            }
            Events::V5 { events, inflight } => {
                events.pending.clear();
                let limit = receive_max.map_or(*inflight, |r| r.min(*inflight));
                events.state = v5::MqttState::new(limit, events.options.manual_acks());
            }
        }
    }

    /// Sets the will sent with the next CONNECT.
    pub(super) fn set_will(&mut self, will: Will) {
        match self {
            Events::V311 { events, .. } => {
                events.mqtt_options.set_last_will(v311_will(will));
            }
            Events::V5 { events, .. } => {
                events.options.set_last_will(v5_will(will));
            }
        }
    }
}

/// Why an MQTT 5 broker refused a publish, with the reason code as on the wire (e.g.
/// `0x87 NotAuthorized`) and the broker's reason string if it sent one; `None` when it took it.
pub(super) fn puback_refusal(p: &v5::mqttbytes::v5::PubAck) -> Option<String> {
    use v5::mqttbytes::v5::PubAckReason as R;
    let code: u8 = match p.reason {
        // No subscriber yet is not a refusal: the broker took it.
        R::Success | R::NoMatchingSubscribers => return None,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    };
    let why = p
        .properties
        .as_ref()
        .and_then(|props| props.reason_string.as_deref());
    Some(match why {
        Some(why) => format!("{code:#04x} {:?}: {why}", p.reason),
        None => format!("{code:#04x} {:?}", p.reason),
    })
}

fn outgoing(o: Outgoing) -> LinkEvent {
    match o {
        Outgoing::Publish(pkid) => LinkEvent::Published(pkid),
        Outgoing::AwaitAck(pkid) => LinkEvent::AwaitAck(pkid),
        Outgoing::Disconnect => LinkEvent::Disconnected,
        _ => LinkEvent::Other,
    }
}

fn v311_will(will: Will) -> rumqttc::LastWill {
    rumqttc::LastWill::new(will.topic, will.payload, QoS::AtLeastOnce, true)
}

fn v5_will(will: Will) -> v5::mqttbytes::v5::LastWill {
    v5::mqttbytes::v5::LastWill::new(
        will.topic,
        will.payload,
        v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None,
    )
}

/// The error text for a TLS failure, with the hint rustls hides deep inside it.
fn other_text(text: String) -> String {
    // rustls reports the broker's TLS alert deep inside a "serialization" error.
    if text.contains("CertificateRequired") {
        format!(
            "the broker requires a client certificate (set mqtt.client_cert and \
             mqtt.client_key): {text}"
        )
    } else {
        text
    }
}

fn refused(why: &str) -> LinkError {
    LinkError {
        text: format!("broker refused the connection: {why}"),
        refused: true,
    }
}

pub(super) fn describe_v311(e: &ConnectionError) -> LinkError {
    match e {
        ConnectionError::ConnectionRefused(code) => refused(match code {
            ConnectReturnCode::BadUserNamePassword => {
                "bad user name or password (check mqtt.username and the password)"
            }
            ConnectReturnCode::NotAuthorized => {
                "not authorised (check mqtt.username, the password or the client certificate)"
            }
            ConnectReturnCode::BadClientId => "client id rejected (check mqtt.client_id)",
            ConnectReturnCode::ServiceUnavailable => "service unavailable",
            ConnectReturnCode::RefusedProtocolVersion => {
                "MQTT 3.1.1 not accepted (try mqtt.protocol = \"5\")"
            }
            ConnectReturnCode::Success => "refused with code success (?)",
        }),
        other => LinkError {
            text: other_text(other.to_string()),
            refused: false,
        },
    }
}

fn describe_v5(e: &v5::ConnectionError) -> LinkError {
    use v5::mqttbytes::v5::ConnectReturnCode as Code;
    match e {
        v5::ConnectionError::ConnectionRefused(code) => match code {
            Code::BadUserNamePassword => {
                refused("bad user name or password (check mqtt.username and the password)")
            }
            Code::NotAuthorized => refused(
                "not authorised (check mqtt.username, the password or the client certificate)",
            ),
            Code::BadClientId | Code::ClientIdentifierNotValid => {
                refused("client id rejected (check mqtt.client_id)")
            }
            Code::RefusedProtocolVersion | Code::UnsupportedProtocolVersion => {
                refused("MQTT 5 not accepted (try mqtt.protocol = \"3.1.1\")")
            }
            other => refused(&format!("reason {other:?}")),
        },
        other => LinkError {
            text: other_text(other.to_string()),
            refused: false,
        },
    }
}
