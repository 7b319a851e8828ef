//! `meterd decode`: explain a DL/T 645 or Modbus RTU frame field by field (being written).

use std::process::ExitCode;

/// Arguments of `meterd decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The frame, in hex (spaces, commas and 0x prefixes allowed).
    #[arg(required = true)]
    pub hex: Vec<String>,
}

/// Runs `meterd decode`.
pub fn run(args: &DecodeArgs) -> ExitCode {
    match crate::hex_input::parse_hex(&args.hex) {
        Ok(b) => {
            println!("{}", crate::hex_input::to_hex(&b));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meterd decode: {e}");
            ExitCode::from(2)
        }
    }
}
