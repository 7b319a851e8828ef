//! Start-up warnings about settings that work but expose a secret: a broker password sent in
//! clear text, and key, password or token files that other users can read.

use std::path::Path;

use crate::config::{BrokerUrl, Config};

/// Whether `host` names this machine (a password to it never crosses a network).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The permission bits of `path` (`None` when it cannot be read; the start fails on it later
/// with its own message).
#[cfg(unix)]
fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn mode(_: &Path) -> Option<u32> {
    None
}

/// The warnings for `config`, one line each.
pub fn start_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mqtt = &config.mqtt;
    let password = mqtt.password_file.is_some() || mqtt.password_env.is_some();
    if password
        && let Ok(BrokerUrl::Tcp { host, port }) = BrokerUrl::parse(&mqtt.url, mqtt.embedded_listen)
        && !is_loopback(&host)
    {
        out.push(format!(
            "[mqtt] the broker password is sent in clear text to {host}:{port} (mqtt://): \
             use mqtts:// so that nobody on the network can read it"
        ));
    }
    let secrets = [
        ("[mqtt] password_file", mqtt.password_file.as_deref()),
        ("[mqtt] client_key", mqtt.client_key.as_deref()),
        ("[service] token_file", config.service.token_file.as_deref()),
    ];
    for (what, path) in secrets {
        let Some(path) = path else { continue };
        if let Some(m) = mode(path)
            && m & 0o077 != 0
        {
            out.push(format!(
                "{what} {} can be read by other users (mode {:04o}): chmod 600 it, owned by the \
                 daemon's user",
                path.display(),
                m & 0o7777
            ));
        }
    }
    out
}

/// Logs [`start_warnings`] as warnings.
pub fn log_start_warnings(config: &Config) {
    for w in start_warnings(config) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    fn config(extra_mqtt: &str, service: &str) -> Config {
        let text = format!("gateway = \"gw\"\n[mqtt]\n{extra_mqtt}\n[service]\n{service}\n");
        match Config::from_text(Path::new("t.toml"), &text) {
            Ok((c, _)) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    fn secret(dir: &Path, name: &str, mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, "s3cret\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p.display().to_string()
    }

    #[test]
    fn a_password_over_plain_mqtt_off_loopback_is_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = secret(dir.path(), "pw", 0o600);
        let w = start_warnings(&config(
            &format!(
                "url = \"mqtt://broker.example:1883\"\nusername = \"gw\"\npassword_file = {pw:?}"
            ),
            "",
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("password is sent in clear text to broker.example:1883"),
            "{w:?}"
        );
        // TLS, loopback, or no password: nothing to say.
        for url in [
            "mqtts://broker.example:8883",
            "mqtt://127.0.0.1:1883",
            "mqtt://localhost",
        ] {
            let w = start_warnings(&config(
                &format!("url = {url:?}\nusername = \"gw\"\npassword_file = {pw:?}"),
                "",
            ));
            assert!(w.is_empty(), "{url}: {w:?}");
        }
        assert!(start_warnings(&config("url = \"mqtt://broker.example\"", "")).is_empty());
    }

    #[test]
    fn secret_files_readable_by_others_are_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = secret(dir.path(), "pw", 0o640);
        let key = secret(dir.path(), "key", 0o604);
        let token = secret(dir.path(), "token", 0o600);
        let w = start_warnings(&config(
            &format!(
                "url = \"mqtts://broker.example\"\nusername = \"gw\"\npassword_file = {pw:?}\nclient_key = {key:?}\nclient_cert = {key:?}"
            ),
            &format!("token_file = {token:?}"),
        ));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with(&format!(
                "[mqtt] password_file {pw} can be read by other users (mode 0640)"
            )),
            "{w:?}"
        );
        assert!(
            w[1].starts_with(&format!(
                "[mqtt] client_key {key} can be read by other users (mode 0604)"
            )),
            "{w:?}"
        );
        let token_open = secret(dir.path(), "token", 0o644);
        let w = start_warnings(&config(
            "url = \"mqtt://127.0.0.1\"",
            &format!("token_file = {token_open:?}"),
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("[service] token_file"), "{w:?}");
    }

    /// What the log says, through a tracing subscriber.
    #[test]
    fn the_warnings_are_logged() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                crate::sync::lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = secret(dir.path(), "pw", 0o644);
        let c = config(
            &format!("url = \"mqtt://10.0.0.9\"\nusername = \"gw\"\npassword_file = {pw:?}"),
            "",
        );
        tracing::subscriber::with_default(subscriber, || log_start_warnings(&c));
        let text = String::from_utf8_lossy(&crate::sync::lock(&buf.0)).into_owned();
        assert!(text.contains("WARN"), "{text}");
        assert!(
            text.contains("password is sent in clear text to 10.0.0.9:1883"),
            "{text}"
        );
        assert!(
            text.contains("can be read by other users (mode 0644)"),
            "{text}"
        );
    }
}
