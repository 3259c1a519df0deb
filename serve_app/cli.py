"""The `labubu` command: tokens for the local platform, and starting it."""

from __future__ import annotations

import argparse
import sys

from serve_app.auth import issue_token
from serve_app.settings import Settings, SettingsError


def token(args: argparse.Namespace) -> int:
    secret = Settings.read().signing_secret()
    if not secret:
        print("the platform verifies RS256 tokens: sign them with your private key", file=sys.stderr)
        return 2
    print(issue_token(secret, tenant=args.tenant, sub=args.sub, role=args.role, ttl_s=args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labubu", description="Labubu AI platform tools")
    commands = parser.add_subparsers(dest="command", required=True)
    token_parser = commands.add_parser("token", help="print a JWT signed with the platform's secret")
    token_parser.add_argument("--tenant", required=True, help="the tenant the token acts for")
    token_parser.add_argument("--sub", default="user", help="the user id (default: user)")
    token_parser.add_argument("--role", choices=["user", "admin"], default="user")
    token_parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default: 3600)")
    token_parser.set_defaults(run=token)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"labubu: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
