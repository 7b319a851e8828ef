//! The built `meterd` binary, run as a technician would run it.

use std::process::Output;
use std::time::Duration;

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_meterd");

/// Runs `meterd ARGS` to its end (killed, and the test failed, after 60 s).
pub async fn meterd(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("meterd hung")
        .expect("meterd did not start")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
