"""python -m sandbox [--host 127.0.0.1] [--port 8025] [--state-file PATH]: serve the vendor sandbox
in the foreground; with --state-file, its records outlive a restart.

SANDBOX_SPRIG_API_KEY / SANDBOX_SPRUCE_API_TOKEN / SANDBOX_SPARKLOOP_API_KEY override the
(non-secret) sandbox credentials."""

from __future__ import annotations

import argparse
import os

from werkzeug.serving import make_server

from sandbox import SandboxSettings, create_sandbox_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description="Serve the Sprig, Spruce and SparkLoop sandbox."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument(
        "--state-file",
        metavar="PATH",
        help="keep the records in this JSON file: read at start, written after every change",
    )
    args = parser.parse_args(argv)
    defaults = SandboxSettings()
    settings = SandboxSettings(
        sprig_api_key=os.environ.get("SANDBOX_SPRIG_API_KEY") or defaults.sprig_api_key,
        spruce_api_token=os.environ.get("SANDBOX_SPRUCE_API_TOKEN") or defaults.spruce_api_token,
        sparkloop_api_key=os.environ.get("SANDBOX_SPARKLOOP_API_KEY") or defaults.sparkloop_api_key,
        state_file=args.state_file,
    )
    app = create_sandbox_app(settings)
    server = make_server(args.host, args.port, app, threaded=True)
    base = f"http://{args.host}:{server.server_port}"
    print(f"Sandbox at {base}", flush=True)
    sprig_key = _shown(settings.sprig_api_key, defaults.sprig_api_key, "SANDBOX_SPRIG_API_KEY")
    spruce_token = _shown(settings.spruce_api_token, defaults.spruce_api_token, "SANDBOX_SPRUCE_API_TOKEN")
    print(f"  SPRIG_API_URL={base}/sprig       Authorization: API-Key {sprig_key}")
    sparkloop_key = _shown(settings.sparkloop_api_key, defaults.sparkloop_api_key, "SANDBOX_SPARKLOOP_API_KEY")
    print(f"  SPRUCE_API_URL={base}/spruce/v1  Authorization: Bearer {spruce_token}")
    print(f"  SPARKLOOP_API_URL={base}/sparkloop/v2  X-Api-Key: {sparkloop_key}")
    print(
        f"  control: {base}/_sandbox/state  /_sandbox/stats  /_sandbox/config  /_sandbox/reset"
        "  /_sandbox/sparkloop/subscribers",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if state_file := app.extensions.get("sandbox.state_file"):
            state_file.save(app.extensions["sandbox"])


def _shown(value: str, default: str, variable: str) -> str:
    # The built-in credentials are not secret; one chosen through the environment may be.
    return value if value == default else f"<${variable}>"


if __name__ == "__main__":
    main()
