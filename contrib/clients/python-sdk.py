#!/usr/bin/env python3
"""Drive taler-otp with the taler-python SDK (iambengineer/taler-python), as a real client.

    python-sdk.py SDK_SRC BASE_URL

SDK_SRC is the SDK's src/ folder (e.g. ../shared/clients/taler-python/src). The SDK's
MerchantClient(BASE_URL) fetches BASE_URL/config when constructed and validates it with
pydantic (MerchantVersionResponse): a missing or mistyped field is a ValueError naming it.
This script then also requires that the announced version range covers the protocol version
the SDK targets (the SDK itself only logs a warning there). For an https:// BASE_URL with a
self-signed certificate, set SSL_CERT_FILE (httpx honours it).

Exit status 0 when the SDK accepted /config, 1 otherwise (the reason on stderr).
"""

import logging
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    sdk_src, base_url = sys.argv[1], sys.argv[2]
    sys.path.insert(0, sdk_src)

    # The SDK reports an incompatible version range only through logging: catch it.
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("taler_python").addHandler(Collect(level=logging.WARNING))

    from taler_python.clients.merchant import MerchantClient
    from taler_python.version import MERCHANT_PROTOCOL_VERSION, check_version

    try:
        with MerchantClient(base_url) as client:
            config = client.get_config()
    except ValueError as e:  # pydantic validation of /config, or an unparsable version
        print(f"python SDK rejected {base_url}/config: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - HTTP status or transport errors
        print(f"python SDK failed on {base_url}/config: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    if warnings or not check_version(config.version, MERCHANT_PROTOCOL_VERSION):
        print(
            f"python SDK (merchant protocol v{MERCHANT_PROTOCOL_VERSION}) finds version "
            f"{config.version} incompatible: {warnings}",
            file=sys.stderr,
        )
        return 1
    print(
        f"python SDK accepted {base_url}/config: name={config.name} version={config.version} "
        f"currency={config.currency} currencies={sorted(config.currencies)} "
        f"exchanges={len(config.exchanges)} default_persona={config.default_persona} "
        f"payment_target_types={config.payment_target_types!r}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
