"""`--format json` prints JSON on stdout whatever happens: the result on success, problems on failure,
and under `watch` one JSON object per line per event. Every output is piped through json.loads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

WAIT = 60


def _bootgen(*args, cwd=None, check_rc=None):
    """Run bootgen as a user would (a separate process): stdout must be JSON and nothing else."""
    done = subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=WAIT, env={**os.environ, "HOME": str(Path(cwd or ".").absolute())})
    if check_rc is not None:
        assert done.returncode == check_rc, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def test_build_and_check_print_their_summary_as_json(example):
    built = _bootgen("build", "--format", "json", check_rc=0)
    assert built["changed"] is True and built["nodes"] == 7 and built["files"] == 83
    assert built["written"] + built["linked"] + built["kept"] == built["files"]
    assert Path("build").resolve().name == built["build_id"]
    again = _bootgen("build", "--format", "json", check_rc=0)
    assert again["changed"] is False and again["build_id"] == built["build_id"]
    assert _bootgen("check", "--format", "json", check_rc=0) == {"ok": True, "nodes": 7, "profiles": 4, "files": 82}  # rendered files: the nginx fence is written with the tree


def test_failures_are_json_too(example):
    (example.nodes / "bad.yaml").write_text("interfaces:\n  - mac: nope\n")
    for command in ("build", "check"):
        problems = _bootgen(command, "--format", "json", check_rc=1)["problems"]
        assert [(p["file"], p["line"], p["path"]) for p in problems] == [("nodes/bad.yaml", 2, "$.interfaces[0].mac")]


def test_usage_errors_are_json_when_json_was_asked_for(example):
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--format", "json", "--no-such-option"],
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 2
    assert "--no-such-option" in json.loads(done.stdout)["usage_error"]
    text = subprocess.run([sys.executable, "-m", "bootgen", "build", "--no-such-option"],
                          capture_output=True, text=True, timeout=WAIT)
    assert text.returncode == 2 and text.stdout == "" and "No such option" in text.stderr


def test_fetch_prints_json(example):
    assert _bootgen("fetch", "--format", "json", check_rc=0) == {"mirrored": 0, "referenced": 4}


def test_init_prints_json(tmp_path):
    result = _bootgen("init", "s", "--format", "json", cwd=tmp_path, check_rc=0)
    assert result["directory"] == "s" and "s/site/site.yaml" in result["created"] and result["ssh_keys_from"] == []
    assert result["warnings"][0].startswith("no SSH public key found")


def test_publish_prints_json(example, tmp_path):
    built = _bootgen("build", "--format", "json", check_rc=0)
    docroot = tmp_path / "srv"
    published = _bootgen("publish", str(docroot), "--format", "json", check_rc=0)
    assert published["build_id"] == built["build_id"] and published["destination"] == str(docroot)
    assert published["dry_run"] is False and published["uploaded"] > 0
    dry = _bootgen("publish", str(docroot), "--dry-run", "--format", "json", check_rc=0)
    assert dry["dry_run"] is True and dry["actions"] == []  # already live: nothing to do


def _start(*args: str, cwd) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    """A bootgen process whose stdout lines are collected as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "bootgen", *args], cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, lines, reader


def test_watch_prints_one_json_object_per_line_per_event(example, tmp_path):
    proc, lines, reader = _start("watch", "--offline", "--format", "json", cwd=tmp_path)
    try:
        _wait_for(lambda: len(lines) >= 2, proc)
        events = [json.loads(line) for line in lines]
        assert events[0] == {"event": "watching", "site": "site", "nodes": "nodes"}
        assert events[1]["event"] == "built" and events[1]["nodes"] == 7
        (example.nodes / "node-1.yaml").write_text("interfaces:\n  - mac: nope\n")
        _wait_for(lambda: len(lines) >= 3, proc)
        failed = json.loads(lines[2])
        assert failed["event"] == "failed"
        assert [p["path"] for p in failed["problems"]] == ["$.interfaces[0].mac"]
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
    assert "Traceback" not in proc.stderr.read()
    assert [json.loads(line) for line in lines][-1] == {"event": "stopped"}  # every line is one JSON object


def _wait_for(predicate, proc) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"watch exited or timed out: {proc.stderr.read() if proc.poll() is not None else ''}")
        time.sleep(0.05)


def test_serve_prints_one_json_object_per_line_per_event(example, tmp_path):
    proc, lines, reader = _start("serve", "--offline", "--port", "0", "--format", "json", cwd=tmp_path)
    try:
        _wait_for(lambda: len(lines) >= 2, proc)
        serving, built = (json.loads(line) for line in lines[:2])
        assert serving["event"] == "serving" and serving["ipxe"] == serving["url"] + "boot.ipxe"
        assert "--dhcp-userclass=set:ipxe,iPXE" in serving["dnsmasq"]
        assert built["event"] == "built" and built["nodes"] == 7
        with urllib.request.urlopen(serving["ipxe"], timeout=WAIT) as answer:  # the URL it names is served
            assert serving["url"] in answer.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
    assert "Traceback" not in proc.stderr.read()
    assert [json.loads(line) for line in lines][-1] == {"event": "stopped"}
