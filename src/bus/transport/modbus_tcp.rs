//! Modbus TCP through tokio-modbus, with a tap that keeps the bytes as evidence.
//!
//! It owns the client connection to a Modbus TCP meter or gateway ([`ModbusTcpClient`]: the
//! bus task's link to one, and `meterd scan`'s), the stream tap ([`TapStream`]) that copies the
//! bytes written and read so a batch carries the real response bytes, and turning
//! tokio-modbus's answers into the driver contract's [`Reply`]. Framing is tokio-modbus's: the
//! byte-stream exchange of [`super::super::exchange`] is not used here.
//!
//! It never retries and never reconnects by itself: after a timeout the caller replaces the
//! connection (a late reply would be taken for the next answer).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll as TaskPoll};
use std::time::Duration;

use meter_protocols::modbus::rtu;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::bus::trace::{Direction, FrameTap};
use crate::meter::contract::Reply;
use crate::sync::lock;

/// Why a Modbus TCP call gave no reply.
pub enum TcpFailure {
    /// No reply in time: the connection must be replaced (a late reply would be taken as the
    /// next answer).
    Timeout,
    /// The connection failed.
    Link(String),
}

/// A Modbus TCP client connection whose bytes are tapped (evidence, traces): the bus task's
/// link to a Modbus TCP meter or gateway, and `meterd scan`'s.
pub struct ModbusTcpClient {
    ctx: tokio_modbus::client::Context,
    tapped: Tapped,
}

impl ModbusTcpClient {
    /// Connects to `address` (`host:port`) within `timeout`.
    pub async fn connect(address: &str, timeout: Duration) -> Result<Self, String> {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Err(_) => Err(format!(
                "{address}: cannot connect: no answer within {timeout:?}"
            )),
            Ok(Err(e)) => Err(format!("{address}: cannot connect: {e}")),
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let tapped = Tapped::default();
                let stream = TapStream {
                    inner: stream,
                    tapped: tapped.clone(),
                };
                let ctx = tokio_modbus::client::tcp::attach_slave(stream, tokio_modbus::Slave(1));
                Ok(Self { ctx, tapped })
            }
        }
    }

    /// Sends read `req` to `unit`; the reply (an exception included) with its raw bytes.
    pub async fn call(
        &mut self,
        unit: u8,
        req: &rtu::Request,
        timeout: Duration,
        tap: &FrameTap,
    ) -> Result<(Reply, Vec<u8>), TcpFailure> {
        modbus_tcp_call(&mut self.ctx, &self.tapped, unit, req, timeout, tap).await
    }
}

/// Bytes a [`TapStream`] saw, for evidence and traces, and whether the peer closed.
#[derive(Debug, Clone, Default)]
pub struct Tapped {
    inner: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
    /// The peer closed the connection (a read returned end of stream). tokio-modbus reports
    /// that as the thread's stale `errno` ("Resource temporarily unavailable (os error 11)"),
    /// which says nothing to a technician.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Tapped {
    fn take(&self) -> (Vec<u8>, Vec<u8>) {
        let mut g = lock(&self.inner);
        (std::mem::take(&mut g.0), std::mem::take(&mut g.1))
    }

    fn peer_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A TCP stream that copies the bytes written and read, so a Modbus TCP batch carries the
/// real response bytes as evidence.
#[derive(Debug)]
pub struct TapStream {
    inner: TcpStream,
    tapped: Tapped,
}

impl AsyncRead for TapStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let TaskPoll::Ready(Ok(())) = &r {
            let new = buf.filled().get(before..).unwrap_or(&[]).to_vec();
            if new.is_empty() && buf.remaining() > 0 {
                self.tapped
                    .closed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let mut g = lock(&self.tapped.inner);
            g.1.extend_from_slice(&new);
        }
        r
    }
}

impl AsyncWrite for TapStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> TaskPoll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let TaskPoll::Ready(Ok(n)) = &r {
            let mut g = lock(&self.tapped.inner);
            g.0.extend_from_slice(buf.get(..*n).unwrap_or(&[]));
        }
        r
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> TaskPoll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn modbus_tcp_call(
    ctx: &mut tokio_modbus::client::Context,
    tapped: &Tapped,
    unit: u8,
    req: &rtu::Request,
    timeout: Duration,
    tap: &FrameTap,
) -> Result<(Reply, Vec<u8>), TcpFailure> {
    use tokio_modbus::client::Reader;
    use tokio_modbus::slave::SlaveContext;
    ctx.set_slave(tokio_modbus::Slave(unit));
    let _ = tapped.take();
    let call = async {
        match req {
            rtu::Request::ReadCoils { address, count } => ctx
                .read_coils(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::Coils)),
            rtu::Request::ReadDiscreteInputs { address, count } => ctx
                .read_discrete_inputs(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::DiscreteInputs)),
            rtu::Request::ReadHoldingRegisters { address, count } => ctx
                .read_holding_registers(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::HoldingRegisters)),
            rtu::Request::ReadInputRegisters { address, count } => ctx
                .read_input_registers(*address, *count)
                .await
                .map(|r| r.map(rtu::Response::InputRegisters)),
            _ => Err(tokio_modbus::Error::Transport(std::io::Error::other(
                "only reads are sent on a poll",
            ))),
        }
    };
    let result = tokio::time::timeout(timeout, call).await;
    let (sent, received) = tapped.take();
    if !sent.is_empty() {
        tap.mbap_frame(Direction::Tx, &sent);
    }
    match result {
        Err(_) => {
            if !received.is_empty() {
                tap.skipped(&received, "partial reply before the timeout");
            }
            Err(TcpFailure::Timeout)
        }
        Ok(Err(_)) if tapped.peer_closed() => {
            Err(TcpFailure::Link("peer closed the connection".to_owned()))
        }
        Ok(Err(e)) => Err(TcpFailure::Link(e.to_string())),
        Ok(Ok(Ok(response))) => {
            tap.mbap_frame(Direction::Rx, &received);
            let response = match response {
                // tokio-modbus returns whole bytes of bits: keep only what was asked.
                rtu::Response::Coils(mut b) | rtu::Response::DiscreteInputs(mut b)
                    if matches!(
                        req,
                        rtu::Request::ReadCoils { .. } | rtu::Request::ReadDiscreteInputs { .. }
                    ) =>
                {
                    let n = match req {
                        rtu::Request::ReadCoils { count, .. }
                        | rtu::Request::ReadDiscreteInputs { count, .. } => usize::from(*count),
                        _ => b.len(),
                    };
                    b.truncate(n);
                    if matches!(req, rtu::Request::ReadCoils { .. }) {
                        rtu::Response::Coils(b)
                    } else {
                        rtu::Response::DiscreteInputs(b)
                    }
                }
                other => other,
            };
            Ok((Reply::ModbusRtu(response), received))
        }
        Ok(Ok(Err(code))) => {
            tap.mbap_frame(Direction::Rx, &received);
            Ok((
                Reply::ModbusRtu(rtu::Response::Exception {
                    function: req.function() | 0x80,
                    code: rtu::ExceptionCode::from_u8(u8::from(code)),
                }),
                received,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A peer that takes the request and closes: the reason says so (tokio-modbus alone gave
    /// "Resource temporarily unavailable (os error 11)").
    #[tokio::test]
    async fn a_peer_that_closes_is_named_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 12];
            let _ = s.read_exact(&mut buf).await;
            // Dropped: FIN after the request, no reply.
        });
        let mut client = ModbusTcpClient::connect(&addr, Duration::from_secs(2))
            .await
            .unwrap();
        let req = rtu::Request::ReadHoldingRegisters {
            address: 0,
            count: 2,
        };
        let tap = FrameTap::new("t", None);
        let r = client.call(1, &req, Duration::from_secs(2), &tap).await;
        peer.await.unwrap();
        match r {
            Err(TcpFailure::Link(reason)) => assert_eq!(reason, "peer closed the connection"),
            Err(TcpFailure::Timeout) => panic!("timeout instead of the closed connection"),
            Ok(_) => panic!("a reply from a peer that sent none"),
        }
    }
}
