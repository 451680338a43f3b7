"""``python -m review invites``: make N invite links for a study whose identity setting is ``invite``.

Example::

    python -m review invites --db var/review.db --n 20 --base-url https://example.org/review/ --days 14

Prints one link per line (``<base-url>?invite=<token>``). Each link admits one reviewer, once: the browser that
opens it first keeps a signed reviewer key, and the link is then spent. Tokens are signed with the database's
install secret, so links of another database are refused. Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from review.cli.common import error, open_existing_study, setup_logging

logger = logging.getLogger(__name__)

MAX_INVITES = 10_000  # per call


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: the database and how many links."""
    parser = argparse.ArgumentParser(prog="python -m review invites", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="var/review.db", help="the study database")
    parser.add_argument("--n", type=int, required=True, help=f"how many links (1-{MAX_INVITES})")
    parser.add_argument("--base-url", default="http://127.0.0.1:7860/", help="the app's public address")
    parser.add_argument("--days", type=float, default=30.0, help="links expire after this many days (0: never)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    return parser


def main_invites(argv: Sequence[str]) -> int:
    """Entry point of ``python -m review invites``."""
    args = build_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    if not 1 <= args.n <= MAX_INVITES:
        return error(f"--n must be between 1 and {MAX_INVITES}, not {args.n}")
    if not args.days >= 0:
        return error(f"--days must be 0 or more, not {args.days}")
    if not args.base_url.startswith(("http://", "https://")) or any(c in args.base_url for c in "?# "):
        return error(f"--base-url must be an http(s) address without query or fragment, not {args.base_url!r}")
    from review.study.identity import Signer

    store = open_existing_study(args.db, writable=True)
    if store is None:
        return 2
    with store:
        signer = Signer(store.install_secret())
        made = [signer.new_invite() for _ in range(args.n)]
        expires = None if args.days == 0 else \
            (datetime.now(timezone.utc) + timedelta(days=args.days)).isoformat(timespec="milliseconds")
        store.add_invites([invite_id for invite_id, _ in made], expires_at=expires)
        identity = store.get_settings().get("identity", "open")
    for _, token in made:
        print(f"{args.base_url}?invite={token}")
    if identity != "invite":
        print(f"note: the stored identity setting is {identity!r}; links are only asked for with identity=invite "
              "(python -m review settings identity=invite, or REVIEW_IDENTITY=invite)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main_invites(sys.argv[1:]))
