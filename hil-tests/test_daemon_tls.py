"""Issue 4, test 4: `mqtts://` to a mosquitto that requires a client certificate. Certificates
are made here with the openssl CLI (a CA, a server certificate for 127.0.0.1 and localhost, a
client certificate). With the client certificate meterd delivers readings; without it, it logs
a clear error, keeps running and retries."""
import shutil
import subprocess
import time

import pytest

from conftest import free_port, wait_for
from daemon_rig import Rig, check_schemas, check_sequence, require_parts


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=meterd HIL test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "hil-gw", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture
def rig(meterd, workdir):
    if shutil.which("openssl") is None:
        pytest.fail("openssl missing: run hil-tests/setup")
    r = Rig(meterd, workdir)
    yield r
    r.close()


def test_tls_with_client_certificate(rig):
    pki = rig.d / "pki"
    pki.mkdir()
    make_pki(pki)
    plain = free_port()  # the subscriber's own plain listener on the same broker
    broker = rig.broker(
        f"cafile {pki}/ca.pem\ncertfile {pki}/server.pem\nkeyfile {pki}/server.key\n"
        f"require_certificate true\ntls_version tlsv1.2\nlistener {plain} 127.0.0.1\n"
    )
    sub = rig.collector(plain)
    rig.start_sim()
    tls = f'ca_file = "{pki}/ca.pem"\nclient_cert = "{pki}/client.pem"\nclient_key = "{pki}/client.key"\n'

    # Without the client certificate: a clear error, repeated, and the daemon stays up.
    rig.write_config(f"mqtts://127.0.0.1:{broker.port}", interval="2s", mqtt_extra=f'ca_file = "{pki}/ca.pem"\n')
    d = rig.start_daemon()
    wait_for(lambda: d.text().count("retrying in") >= 2 or not d.alive(), 40, "two failed attempts")
    time.sleep(1)
    assert d.alive(), d.text()
    assert not sub.readings(), "readings got through without a client certificate"
    log = d.text()
    lines = [l for l in log.splitlines() if "retrying in" in l]
    print("\n" + "\n".join(lines[:3]))
    assert any("requires a client certificate" in l and "client_cert" in l for l in lines), (
        f"the error does not say a client certificate is needed:\n{lines[:3]}")
    d.stop()

    # With it: readings arrive over TLS.
    rig.write_config(f"mqtts://127.0.0.1:{broker.port}", interval="2s", mqtt_extra=tls)
    d = rig.start_daemon()
    wait_for(lambda: len(sub.readings()) >= 8, 60, "readings over mqtts")
    d.stop()
    check_schemas(sub)
    check_sequence(sub.readings())
    assert "retrying" not in d.text(), d.text()
