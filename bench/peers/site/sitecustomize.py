"""Put on a tap's PYTHONPATH by bench/peers/run.py: points the tap at the sandbox without touching its code.

- PMSYNC_BENCH_CA_BUNDLE: the bundle `certifi.where()` returns (tap-jira verifies against certifi and ignores
  REQUESTS_CA_BUNDLE), and the CA file python-asana verifies against.
- PMSYNC_BENCH_ASANA_HOST: python-asana's default `Configuration.host`, so every ApiClient the tap builds talks
  to the Asana emulator.
"""
import os

_bundle = os.environ.get("PMSYNC_BENCH_CA_BUNDLE")
if _bundle:
    import certifi

    certifi.where = lambda: _bundle

_asana_host = os.environ.get("PMSYNC_BENCH_ASANA_HOST")
if _asana_host:
    import asana

    _configuration = asana.Configuration()
    _configuration.host = _asana_host
    _configuration.ssl_ca_cert = _bundle
    asana.Configuration.set_default(_configuration)
