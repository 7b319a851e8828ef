//! Fee control: the billing core's signed commands (`meterd.command.v1`) to a meter's relay and
//! alarm, and their results (`meterd.command-result.v1`). shared/design.md §3.2 pins the
//! messages; docs/mqtt.md documents them for integrators.
//!
//! **Owns**: the decision whether a command is executed (authenticity, validity, replay,
//! addressing, what the meter can do, the gateway's policy), the audit trail, and the result.
//!
//! **Flow**: the uplink subscribes to `{prefix}/{gateway}/meters/+/commands` and hands each
//! message to [`run`] on a channel ([`crate::uplink::IncomingCommand`], with its retain flag).
//! [`run`] checks it ([`verify`], then replay and [`policy`] against the spool), records an
//! accepted command *in flight* in the spool (durable) and only then hands a
//! [`ControlRequest`] to the bus task that owns the meter ([`MeterBuses`]); the bus sends the
//! frame (at most one resend), reads status word 3 back and answers with a
//! [`ControlOutcome`]. The result, the frames and the audit lines go into the spool in one
//! transaction and the result is published through the outbox like a reading (`kind` 3,
//! `…/command-results`, deleted on PUBACK). Every rejection gets a published result too.
//!
//! **At most once**: a command found in flight at start (the gateway crashed or lost power
//! between recording it and its result) is never sent again: its meter is only read back
//! (`read_back_only`) and the result says what the meter reports.
//!
//! **Never**: talks to a port (the bus does); trusts any field of a body whose signature did
//! not verify; acts on a retained message; acts while the gateway clock is not synchronised;
//! addresses a broadcast or wildcard address; logs a control password.

pub mod credentials;
pub mod policy;
pub mod result;
mod task;
pub mod verify;
pub mod view;

pub use credentials::{Credentials, CredentialsError};
pub use result::{CommandResult, Outcome, RESULT_SCHEMA};
pub use task::{ControlError, ControlSetup, MeterBuses, run};
pub use verify::{COMMAND_SCHEMA, Rejection};
pub use view::{ControlSnapshot, ControlView, MeterControl};

#[cfg(doc)]
use crate::meter::control::{ControlOutcome, ControlRequest};

#[cfg(test)]
mod tests;
