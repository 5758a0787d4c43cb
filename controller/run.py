"""Launcher for os-ken releases without `osken-manager` (4.0 removed it).

    python -m controller.run --ofp-tcp-listen-port 6653 [--config-file loris.conf]

does what `osken-manager controller/loris_app.py` does on os-ken 3.x: patch the hub, parse
the os-ken options, start the Loris app with os-ken's OpenFlow handler. On 4.x set
OSKEN_HUB_TYPE=eventlet (the default here) until the native hub's defects (no DEAD event on
disconnect, exceptions of spawned threads swallowed, no hub.WSGIServer) are fixed.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OSKEN_HUB_TYPE", "eventlet")   # must precede every os_ken import

from os_ken.lib import hub  # noqa: E402

hub.patch(thread=True)

from os_ken import cfg  # noqa: E402
from os_ken import log as osken_log  # noqa: E402
from os_ken.base.app_manager import AppManager  # noqa: E402  (registers the ofp-* options)


def main(argv: list[str] | None = None) -> None:
    cfg.CONF(args=sys.argv[1:] if argv is None else argv, project="os_ken")
    osken_log.init_log()
    AppManager.run_apps(["controller.loris_app", "os_ken.controller.ofp_handler"])


if __name__ == "__main__":
    main()
