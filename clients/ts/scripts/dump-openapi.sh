#!/bin/sh
# Write the broker's OpenAPI document to clients/ts/openapi.json (no services needed:
# create_app with dummy settings, no lifespan).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
cd "$root"
"$python" - "$here/openapi.json" <<'PY'
import json
import sys

from broker import config
from broker.app import create_app

settings = config.Settings(
    _env_file=None,
    database_url="postgresql://x@127.0.0.1/x",
    s3_endpoint="http://127.0.0.1:9000",
    s3_access_key="a",
    s3_secret_key="b",
    jwt_secret="0123456789abcdef0123456789abcdef",
    webhook_token="webhook-token-0123456789",
)
with open(sys.argv[1], "w") as out:
    json.dump(create_app(settings).openapi(), out, indent=2, sort_keys=False)
    out.write("\n")
PY
echo "wrote $here/openapi.json"
