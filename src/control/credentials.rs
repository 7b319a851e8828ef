//! The meters' control passwords (`[control] credentials`): a TOML file kept apart from the
//! configuration, readable by meterd only. Looked up per meter, then per profile, then the
//! file's `[default]`:
//!
//! ```toml
//! [default]
//! level = 2              # password level PA: 02 or 04
//! password = "000000"    # six hex digits as the meter's documentation writes them (P2 P1 P0)
//! operator = "00000000"  # eight hex digits (C3 C2 C1 C0)
//! [profile."dlt645-three-phase"]
//! level = 4
//! password = "123456"
//! operator = "00000001"
//! [meter."000000123456"]
//! level = 2
//! password = "654321"
//! operator = "00000001"
//! ```
//!
//! The file is refused when others (neither its owner nor its group) may read or write it: a
//! password that trips every meter of a substation is not for everyone on the gateway. The
//! values never reach a log (`ControlCredentials`' `Debug` shows only the level).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::meter::control::ControlCredentials;

/// Why the credentials file cannot be used.
#[derive(Debug, Error)]
pub enum CredentialsError {
    /// It cannot be read.
    #[error("control credentials {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Others may read or write it.
    #[error(
        "control credentials {path}: mode {mode:04o} lets others read or write it; \
         chmod o-rwx (0600 or 0640 with meterd's group)"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Not the expected TOML (the message names line, column and key, never a value).
    #[error("control credentials {path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    level: u8,
    password: String,
    operator: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    default: Option<Entry>,
    #[serde(default)]
    profile: BTreeMap<String, Entry>,
    #[serde(default)]
    meter: BTreeMap<String, Entry>,
}

/// The loaded credentials.
#[derive(Default, Clone)]
pub struct Credentials {
    default: Option<ControlCredentials>,
    profile: BTreeMap<String, ControlCredentials>,
    meter: BTreeMap<String, ControlCredentials>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("default", &self.default.is_some())
            .field("profiles", &self.profile.len())
            .field("meters", &self.meter.len())
            .finish()
    }
}

fn hex_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn convert(where_: &str, e: Entry) -> Result<ControlCredentials, String> {
    if !matches!(e.level, 2 | 4) {
        return Err(format!(
            "{where_}: level must be 2 or 4 (plaintext control), found {}",
            e.level
        ));
    }
    let password = hex_fixed::<3>(&e.password)
        .ok_or_else(|| format!("{where_}: password must be six hex digits"))?;
    let operator = hex_fixed::<4>(&e.operator)
        .ok_or_else(|| format!("{where_}: operator must be eight hex digits"))?;
    Ok(ControlCredentials {
        level: e.level,
        password,
        operator,
    })
}

impl Credentials {
    /// Reads and checks `path` (see the module doc).
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let meta = std::fs::metadata(path).map_err(|e| CredentialsError::Read {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            return Err(CredentialsError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| CredentialsError::Read {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        Self::parse(&text).map_err(|why| CredentialsError::Parse {
            path: path.to_owned(),
            why,
        })
    }

    /// Parses the file's text. Errors never quote a value.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let file: File = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may hold a password.
            let at = e.span().map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            });
            format!("{}{}", at.unwrap_or_default(), e.message())
        })?;
        let mut c = Credentials::default();
        if let Some(e) = file.default {
            c.default = Some(convert("[default]", e)?);
        }
        for (name, e) in file.profile {
            let v = convert(&format!("[profile.{name:?}]"), e)?;
            c.profile.insert(name, v);
        }
        for (name, e) in file.meter {
            let v = convert(&format!("[meter.{name:?}]"), e)?;
            c.meter.insert(name, v);
        }
        Ok(c)
    }

    /// The credentials for `meter` of `profile`: the meter's, else the profile's, else the
    /// default.
    pub fn for_meter(&self, meter: &str, profile: &str) -> Option<&ControlCredentials> {
        self.meter
            .get(meter)
            .or_else(|| self.profile.get(profile))
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[default]
level = 2
password = "000000"
operator = "00000000"
[profile."dlt645-three-phase"]
level = 4
password = "123456"
operator = "0000000A"
[meter."000000123456"]
level = 2
password = "654321"
operator = "00000001"
"#;

    #[test]
    fn meter_then_profile_then_default() {
        let c = Credentials::parse(TEXT).unwrap();
        let m = c.for_meter("000000123456", "dlt645-three-phase").unwrap();
        assert_eq!(
            (m.level, m.password, m.operator),
            (2, [0x65, 0x43, 0x21], [0, 0, 0, 1])
        );
        let p = c.for_meter("000000999999", "dlt645-three-phase").unwrap();
        assert_eq!((p.level, p.password), (4, [0x12, 0x34, 0x56]));
        let d = c.for_meter("000000999999", "other").unwrap();
        assert_eq!(d.password, [0, 0, 0]);
        assert!(
            Credentials::parse("")
                .unwrap()
                .for_meter("x", "y")
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_place_never_the_value() {
        let e = Credentials::parse(
            "[default]\nlevel = 3\npassword = \"987654\"\noperator = \"00000000\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("level must be 2 or 4") && !e.contains("987654"),
            "{e}"
        );
        let e = Credentials::parse(
            "[default]\nlevel = 2\npassword = \"98765\"\noperator = \"00000000\"\n",
        )
        .unwrap_err();
        assert!(e.contains("six hex digits") && !e.contains("98765"), "{e}");
        let e = Credentials::parse("[default]\nlevel = 2\npasword = \"987654\"\n").unwrap_err();
        assert!(e.contains("line 3") && !e.contains("987654"), "{e}");
        assert!(!format!("{:?}", Credentials::parse(TEXT).unwrap()).contains("654321"));
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cred.toml");
        std::fs::write(&path, TEXT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("o-rwx"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Credentials::load(&path).is_ok());
        let e = Credentials::load(&dir.path().join("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml"), "{e}");
    }
}
