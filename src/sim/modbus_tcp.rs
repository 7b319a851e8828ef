//! The Modbus TCP side of the simulator, on tokio-modbus's server.
//!
//! This module owns the translation between tokio-modbus's request/response types and the
//! simulated meters (which answer in the protocols crate's types), unit-id dispatch (a unit
//! with no meter gets no reply), and the faults that make sense over MBAP: no reply, late
//! reply, abnormal (exception) reply, plus the configured reply latency. MBAP framing belongs
//! to tokio-modbus, so byte-level faults are refused by the configuration check. It never
//! computes values itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use meter_protocols::modbus::rtu::{self, Request as RtuRequest, Response as RtuResponse};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::fault::FaultKind;
use super::port::PortShared;
use super::truth::TruthLine;
use crate::clock::{rfc3339_ms, wall_clock_ms};

/// The tokio-modbus service of one Modbus TCP port.
#[derive(Debug, Clone)]
struct MeterService {
    port: Arc<PortShared>,
}

fn to_rtu(request: &Request<'_>) -> Option<RtuRequest> {
    Some(match request {
        Request::ReadCoils(address, count) => RtuRequest::ReadCoils {
            address: *address,
            count: *count,
        },
        Request::ReadDiscreteInputs(address, count) => RtuRequest::ReadDiscreteInputs {
            address: *address,
            count: *count,
        },
        Request::ReadHoldingRegisters(address, count) => RtuRequest::ReadHoldingRegisters {
            address: *address,
            count: *count,
        },
        Request::ReadInputRegisters(address, count) => RtuRequest::ReadInputRegisters {
            address: *address,
            count: *count,
        },
        Request::WriteSingleCoil(address, value) => RtuRequest::WriteSingleCoil {
            address: *address,
            value: *value,
        },
        Request::WriteSingleRegister(address, value) => RtuRequest::WriteSingleRegister {
            address: *address,
            value: *value,
        },
        Request::WriteMultipleCoils(address, values) => RtuRequest::WriteMultipleCoils {
            address: *address,
            values: values.to_vec(),
        },
        Request::WriteMultipleRegisters(address, values) => RtuRequest::WriteMultipleRegisters {
            address: *address,
            values: values.to_vec(),
        },
        _ => return None,
    })
}

fn from_rtu(response: RtuResponse) -> Result<Response, ExceptionCode> {
    match response {
        RtuResponse::HoldingRegisters(r) => Ok(Response::ReadHoldingRegisters(r)),
        RtuResponse::InputRegisters(r) => Ok(Response::ReadInputRegisters(r)),
        RtuResponse::Coils(b) => Ok(Response::ReadCoils(b)),
        RtuResponse::DiscreteInputs(b) => Ok(Response::ReadDiscreteInputs(b)),
        RtuResponse::WriteSingleCoil { address, value } => {
            Ok(Response::WriteSingleCoil(address, value))
        }
        RtuResponse::WriteSingleRegister { address, value } => {
            Ok(Response::WriteSingleRegister(address, value))
        }
        RtuResponse::WriteMultipleCoils { address, count } => {
            Ok(Response::WriteMultipleCoils(address, count))
        }
        RtuResponse::WriteMultipleRegisters { address, count } => {
            Ok(Response::WriteMultipleRegisters(address, count))
        }
        RtuResponse::Exception { code, .. } => Err(ExceptionCode::new(code.to_u8())),
    }
}

/// The PDU (function + data) of an RTU ADU: unit and CRC stripped.
fn pdu(adu: &[u8]) -> &[u8] {
    adu.get(1..adu.len().saturating_sub(2)).unwrap_or_default()
}

impl Service for MeterService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let port = Arc::clone(&self.port);
        Box::pin(async move {
            let unit = req.slave;
            let Some(meter) = port.meters.iter().find(|m| m.unit == Some(unit)).cloned() else {
                return Ok(None);
            };
            let Some(request) = to_rtu(&req.request) else {
                return Err(ExceptionCode::IllegalFunction);
            };
            let t = port.clock.now();
            if meter.is_dead(t) {
                return Ok(None);
            }
            let (mut response, mut values) = meter.respond_modbus(&request, t);
            let fired = match meter.faults.lock() {
                Ok(mut f) => f.next(false),
                Err(_) => return Err(ExceptionCode::ServerDeviceFailure),
            };
            if fired.has(FaultKind::NoReply) {
                return Ok(None);
            }
            if let Some(code) = fired.abnormal_code {
                response = RtuResponse::Exception {
                    function: request.function(),
                    code: rtu::ExceptionCode::from_u8(code),
                };
                values.clear();
            }
            let delay = port.config.reply_latency + fired.delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(truth) = &port.truth {
                let mut req_adu = Vec::new();
                let mut resp_adu = Vec::new();
                let _ = rtu::encode_request(unit, &request, &mut req_adu);
                let _ = rtu::encode_response(unit, &response, &mut resp_adu);
                let line = TruthLine {
                    time: rfc3339_ms(wall_clock_ms()),
                    sim_time: rfc3339_ms(t),
                    port: &port.name,
                    meter: &meter.id,
                    protocol: meter.protocol.name(),
                    framing: "mbap-pdu",
                    request: rtu::hex(pdu(&req_adu)),
                    response: rtu::hex(pdu(&resp_adu)),
                    echo: None,
                    faults: &fired.kinds,
                    valid: true,
                    values: &values,
                };
                if let Err(e) = truth.write(&line) {
                    tracing::warn!(port = %port.name, "cannot write the truth log: {e}");
                }
            }
            from_rtu(response).map(Some)
        })
    }
}

/// Serves Modbus TCP on `listener` until the simulator stops.
pub async fn serve(listener: TcpListener, port: Arc<PortShared>, mut stop: watch::Receiver<bool>) {
    let name = port.name.clone();
    let service = MeterService { port };
    let on_connected = move |stream: TcpStream, addr: SocketAddr| {
        let service = service.clone();
        async move {
            let _ = stream.set_nodelay(true);
            accept_tcp_connection(stream, addr, move |_| {
                Ok::<_, io::Error>(Some(service.clone()))
            })
        }
    };
    let on_error = move |e: io::Error| tracing::debug!("modbus tcp connection ended: {e}");
    let server = Server::new(listener);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = server.serve_until(&on_connected, on_error, stopped).await {
        tracing::warn!(port = %name, "modbus tcp server stopped: {e}");
    }
}
