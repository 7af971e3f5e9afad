"""A screenshot of the demo page in headless Chromium (Debian's `chromium`), to show that it renders
with nothing from the internet.

    apt-get install -y chromium && pip install -e ".[demo]"
    python tools/demo_screenshot.py --model runs/mnist_text_to_image/model --out docs/images/demo_page.png
    python tools/demo_screenshot.py --rollouts runs/metaworld_mt10/rollout --out docs/images/demo_rollouts.png

Serves the page (launch_demo) on a free local port, then runs `chromium --headless --screenshot`
on it, giving the page's scripts `--wait-ms` of virtual time to load and run the first
generation. Chromium resolves no host name (a page that fetched fonts or scripts from the internet
would show it) and logs its requests: any of the page's that left 127.0.0.1 are listed, and the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from cvae_bridge.demo import DemoConfig, launch_demo

LOCAL = ("data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a text-to-image model folder: the Generate tab")
    parser.add_argument("--rollouts", help="a rollout folder (success.json, videos): the Rollouts tab")
    parser.add_argument("--prompt", dest="prompts", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--num", type=int, default=4, help="images per prompt (default: 4)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--window-size", default="1280,1000", help="W,H in pixels (default: 1280,1000)")
    parser.add_argument("--colors", type=int, help="save with a palette of this many colours (a smaller PNG)")
    parser.add_argument(
        "--wait-ms", type=int, default=20000, help="virtual time for the page (default: 20000)"
    )
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = DemoConfig(
        model=args.model, rollouts=args.rollouts, prompts=args.prompts, num=args.num, port=port
    )
    demo = launch_demo(config, block=False)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    try:
        with tempfile.TemporaryDirectory() as profile:
            net_log = Path(profile) / "net_log.json"
            command = [
                chromium,
                "--headless",
                "--no-sandbox",  # root in a container
                "--disable-gpu",
                "--hide-scrollbars",
                "--disable-background-networking",  # the browser's own calls home: not the page's
                "--disable-component-update",
                "--disable-sync",
                "--disable-features=AutofillServerCommunication",  # asks Google about the page's forms
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name resolves: offline
                f"--log-net-log={net_log}",
                f"--window-size={args.window_size}",
                f"--virtual-time-budget={args.wait_ms}",
                f"--screenshot={out}",
                demo.local_url,
            ]
            subprocess.run(command, check=True, timeout=300, capture_output=True)
            # The page's requests, whatever their host, carry its site in their isolation key; the
            # browser's own (updates, spelling dictionaries) do not.
            log = json.loads(net_log.read_text())
            start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
            requested = {
                event["params"]["url"]
                for event in log["events"]
                if event["type"] == start
                and event.get("params", {}).get("network_isolation_key", "").startswith("http://127.0.0.1")
            }
    finally:
        demo.close()
    if not out.is_file():
        sys.exit(f"chromium wrote no screenshot: is {demo.local_url} reachable from it?")
    if args.colors:
        Image.open(out).convert("RGB").quantize(args.colors).save(out, optimize=True)
    external = sorted(u for u in requested if not u.startswith((demo.local_url, *LOCAL)))
    print(f"wrote {out} ({out.stat().st_size // 1024} KB); the page made {len(requested)} requests")
    for url in external:
        print(f"  left this machine: {url}")
    return 1 if external else 0


if __name__ == "__main__":
    sys.exit(main())
