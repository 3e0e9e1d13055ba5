#!/usr/bin/env python3
"""Fails when the Docker image's Rust toolchain or Cargo.toml's `rust-version` is older than a
locked dependency needs.

There is no container engine on the build machines, so `docker build` never runs in CI. A
dependency update that raises the minimum Rust version would break the image silently; this
check reads what `cargo metadata --locked` says every locked package needs (its `rust_version`)
and compares it with the `FROM rust:X.Y` line of the Dockerfile and the crate's `rust-version`.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def version(text):
    """'1.88' or '1.88.0' -> (1, 88, 0)."""
    parts = [int(p) for p in text.strip().split(".")]
    return tuple((parts + [0, 0])[:3])


def show(v):
    return f"{v[0]}.{v[1]}" if v[2] == 0 else ".".join(map(str, v))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    needs = [
        (version(p["rust_version"]), f'{p["name"]} {p["version"]}')
        for p in metadata["packages"]
        if p.get("rust_version") and p["id"] not in members
    ]
    if not needs:
        print("check_toolchain: no locked dependency declares a rust_version")
        return 0
    highest = max(v for v, _ in needs)
    culprits = sorted(name for v, name in needs if v == highest)

    problems = []
    for p in metadata["packages"]:
        if p["id"] not in members:
            continue
        declared = p.get("rust_version")
        if declared is None:
            problems.append(f'Cargo.toml of {p["name"]}: no `rust-version`; set it to "{show(highest)}"')
        elif version(declared) < highest:
            problems.append(
                f'Cargo.toml of {p["name"]}: rust-version = "{declared}", but the locked dependencies '
                f'need {show(highest)}; set rust-version = "{show(highest)}"'
            )

    dockerfile = (ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM\s+rust:(\d+\.\d+(?:\.\d+)?)\S*", dockerfile, re.MULTILINE)
    if not images:
        problems.append("Dockerfile: no `FROM rust:X.Y` build stage found; pin the toolchain version")
    for image in images:
        if version(image) < highest:
            problems.append(
                f"Dockerfile: FROM rust:{image}, but the locked dependencies need {show(highest)}; "
                f"use rust:{show(highest)} or newer"
            )

    print(f"check_toolchain: the locked dependencies need Rust {show(highest)} "
          f"({', '.join(culprits[:4])}{' ...' if len(culprits) > 4 else ''})")
    for problem in problems:
        print(f"check_toolchain: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
