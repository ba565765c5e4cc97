"""Append-only JSONL checkpoints of the resumable model stages (beam_search shards, beam_rewards).

Line 1 is a JSON header holding `settings_hash` (a sha256 of everything that determines the rows); each further
line is one finished anchor, `{"anchor": id, "rows": [...]}`. A resume keeps the finished anchors only when the
header's hash equals the one the resuming run computes, so it never continues other work.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def read_checkpoint(partial: Path, want: str) -> dict[str, list[dict]] | None:
    """Finished anchors of a checkpoint written with settings hash `want`; None if it was written with other
    settings (or has no readable header). Drops a torn last line (a killed run) from the file."""
    done: dict[str, list[dict]] = {}
    good = 0  # bytes up to the end of the last complete line
    with open(partial, "rb") as f:
        header = f.readline()
        try:
            head = json.loads(header) if header.endswith(b"\n") else {}
        except json.JSONDecodeError:
            head = {}
        if not isinstance(head, dict) or head.get("settings_hash") != want:
            got = head.get("settings_hash") if isinstance(head, dict) else None
            print(f"{partial}: checkpoint written with other settings (hash {str(got)[:12]}, now {want[:12]}); "
                  f"discarding it and starting the shard afresh", file=sys.stderr)
            return None
        good = len(header)
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn last line of a killed run: recompute that anchor
            rec = json.loads(line)
            done[rec["anchor"]] = rec["rows"]
            good += len(line)
    # Drop the torn tail before appending, or the next line would be glued to it and the checkpoint unreadable.
    os.truncate(partial, good)
    return done
