"""Self-signed test CAs and server certificates made with the openssl command (tests only)."""
import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory, name):
    """A CA: (cert path, key path) named name.pem / name.key in directory."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=anomaly test CA " + name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")


def make_server_cert(directory, name, ca_name, ip="127.0.0.1"):
    """A server certificate for `ip` signed by the CA ca_name: (cert path, key path)."""
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" % ip)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key",
             "-out", name + ".csr", "-subj", "/CN=" + ip, cwd=directory)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca_name + ".pem", "-CAkey", ca_name + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=directory)
    return os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
