"""python -m sandbox --port 8025: serve the vendor sandbox in the foreground."""
from __future__ import annotations

import argparse
import os

from sandbox import SandboxSettings, create_sandbox_app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the Sprig and Spruce sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    settings = SandboxSettings(
        sprig_api_key=os.environ.get("SANDBOX_SPRIG_API_KEY", SandboxSettings.sprig_api_key),
        spruce_api_token=os.environ.get("SANDBOX_SPRUCE_API_TOKEN", SandboxSettings.spruce_api_token),
    )
    base = f"http://{args.host}:{args.port}"
    print(f"Sprig:  {base}/sprig   (API-Key {settings.sprig_api_key})")
    print(f"Spruce: {base}/spruce/v1   (Bearer {settings.spruce_api_token})")
    print(f"State:  {base}/_sandbox/state")
    create_sandbox_app(settings).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
