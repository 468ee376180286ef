"""Read one value from a running sidecar's /metrics, for the demo and the benches (not the daemon)."""
import urllib.request


def read_metric(port, name, host="127.0.0.1", timeout=2):
    """Value of `anomaly_detector_<name>` (unlabelled) as an int when integral, else float; None if unreachable."""
    prefix = "anomaly_detector_%s " % name
    try:
        with urllib.request.urlopen("http://%s:%d/metrics" % (host, port), timeout=timeout) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(prefix):
                    value = float(line.split()[1])
                    return int(value) if value.is_integer() else value
    except OSError:
        return None
    return None
