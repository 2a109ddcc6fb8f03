"""The score flow's pages: animated SVG skeletons generated from the arrays (thinned for long
repetitions, and saying so), every uploaded string escaped; the run's overview page opened in
headless Chromium: it renders, its links resolve, and a session page's animation advances."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from score_fixtures import INFO, save_tiny_model, write_uploads

from flows.report_html import MAX_FRAMES, VIEW_H, VIEW_W, Motion, overview_page, session_page
from flows.score import score_folder
from model.data.skeletons import get_skeleton

SKELETON = get_skeleton("ec3d19")
HOSTILE = "<script>alert(1)</script>\"'&"
SESSIONS, BROKEN = 4, 3


def _report(n_reps: int, text: str) -> dict:
    reps = [{"index": i, "start_frame": 0, "end_frame": 10, "exercise": "squat",
             "mistake": text, "predicted_label": text, "confidence": 0.5, "unsure": False,
             "cues": [text], "deviations": [{"joint": text, "cm": 3.0, "direction": text,
                                             "frame": 1, "moment": text}],
             "error": None} for i in range(n_reps)]
    return {"session_id": text, "subject": text, "declared_exercise": text,
            "model": {"name": text, "version": "1", "dataset_version": 1},
            "summary": {"repetitions": n_reps, "correct": 0, "unsure": 0,
                        "mistakes": {text: n_reps}, "exercise_disagreement": True},
            "repetitions": reps}


def _motion(frames: int, seed: int = 0) -> Motion:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(frames, SKELETON.n_joints, 3)).astype(np.float32)
    return Motion(base, base + 0.1)


class Collect(HTMLParser):
    """Tags, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collect:
    c = Collect()
    c.feed(page)
    return c


def test_session_page_animates_both_motions_in_two_views_and_escapes_uploads():
    page = session_page(_report(2, HOSTILE), [_motion(30), _motion(200, 1)], SKELETON, 30.0)
    assert HOSTILE not in page and "alert(1)" in page
    doc = parse(page)
    assert [t for t, _ in doc.tags].count("script") == 1
    anims = [a for t, a in doc.tags if t == "div" and a.get("class") == "anim"]
    assert [int(a["data-frames"]) for a in anims] == [30, MAX_FRAMES]
    paths = [a for t, a in doc.tags if t == "path"]
    assert len(paths) == 2 * 2 * 2  # repetitions x views x motions
    assert {a["stroke"] for a in paths} == {"#d62728", "#2ca02c"}
    assert all(a["d"].count("M") == len(SKELETON.bones) for a in paths)
    for anim in anims:
        n = int(anim["data-frames"])
        xy = np.frombuffer(base64.b64decode(anim["data-motion"]), dtype="<i2")
        xy = xy.reshape(2, 2, n, SKELETON.n_joints, 2)
        assert xy[..., 0].min() >= 0 and xy[..., 0].max() <= VIEW_W
        assert xy[..., 1].min() >= 0 and xy[..., 1].max() <= VIEW_H
        assert not np.array_equal(xy[0], xy[1]), "original and corrected drawn the same"
        assert not np.array_equal(xy[:, :, 0], xy[:, :, -1]), "the motion does not move"
    ranges = [a for t, a in doc.tags if t == "input" and a.get("type") == "range"]
    assert [int(a["max"]) for a in ranges] == [29, MAX_FRAMES - 1]
    assert f"{MAX_FRAMES} of 200 frames shown" in page
    assert page.count("frames shown") == 1


def test_session_page_says_why_a_repetition_was_not_scored_or_not_corrected():
    report = _report(3, "sit_to_stand")
    failed, other, uncorrected = report["repetitions"]
    failed.update(mistake=None, predicted_label=None, confidence=None, cues=[], deviations=[],
                  error=f"exercise 'squat' is not one this model was trained on {HOSTILE}")
    other.update(exercise="arm_raise", mistake="elbows_bent")
    uncorrected.update(exercise="sit_to_stand", deviations=[],
                       note="no correct repetitions of sit_to_stand in the training data, "
                            "so no correction is shown")
    page = session_page(report, [None, _motion(20), None], SKELETON, 30.0)
    assert HOSTILE not in page
    text = "".join(parse(page).text)
    assert "None" not in text
    assert "Repetition 1: not scored" in text and "is not one this model was trained on" in text
    assert "took this repetition for a arm_raise, not a sit_to_stand" in text
    assert text.count("took this repetition") == 1
    assert "no correct repetitions of sit_to_stand in the training data" in text


def test_overview_lists_sessions_counts_unsure_and_errors_escaped():
    run = {"model": {"name": "m", "version": "2"}, "time": "now",
           "sessions": [{"page": "a-1.html", "session_id": HOSTILE, "subject": "s",
                         "exercise": "squat", "repetitions": 3, "correct": 1, "unsure": 1,
                         "mistakes": {"knees_inward": 1}, "status": "scored"}],
           "mistakes": {"knees_inward": 1}, "exercises": {"squat": 3},
           "unsure": [{"page": "a-1.html", "session_id": HOSTILE, "rep": 2,
                       "label": "front_bent", "confidence": 0.31}],
           "errors": [{"input": "up/x.json", "kind": "bad_json", "reason": HOSTILE}],
           "failed": 2, "duplicates": [{"input": HOSTILE, "of": "up/a.json"}],
           "failed_reps": [{"page": "a-1.html", "session_id": HOSTILE, "rep": 0,
                            "reason": f"exercise {HOSTILE!r} is not one this model knows"}]}
    page = overview_page(run)
    assert HOSTILE not in page
    doc = parse(page)
    hrefs = [a["href"] for t, a in doc.tags if t == "a"]
    assert hrefs == ["a-1.html#rep-1", "a-1.html#rep-3", "a-1.html"]
    text = " ".join(doc.text)
    assert "bad_json" in text and "31%" in text and "knees_inward" in text
    assert "Repetitions not scored (2)" in text and "is not one this model knows" in text
    assert "1 duplicates, 2 repetitions not scored" in text and "up/a.json" in text


def chromium(tmp: Path, *args: str) -> str:
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'profile'}", *args],
        check=True, capture_output=True, timeout=120, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pages")
    model_dir = save_tiny_model(work / "model")
    uploads = write_uploads(work / "up", SESSIONS, BROKEN, seed=4)
    out = work / "reports"
    summary = score_folder(str(uploads), str(out), model_dir, INFO)
    return summary, out


def test_a_run_writes_one_page_per_session_and_an_overview_with_every_error(scored_run):
    summary, out = scored_run
    assert summary.accounted and (summary.reports, summary.errors) == (SESSIONS, BROKEN)
    assert summary.overview == str(out / "index.html")
    doc = parse((out / "index.html").read_text())
    pages = {a["href"] for t, a in doc.tags if t == "a" and "#" not in a["href"]}
    assert pages == {Path(r).with_suffix(".html").name for r in summary.report_files}
    text = " ".join(doc.text)
    assert all(Path(e["input"]).name in text for e in summary.error_records)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium not installed")
def test_overview_renders_in_chromium_links_resolve_and_the_animation_advances(scored_run,
                                                                             tmp_path):
    summary, out = scored_run
    dom = chromium(tmp_path, "--dump-dom", (out / "index.html").as_uri())
    links = re.findall(r'<a href="([^"]+)"', dom)
    assert len([h for h in links if "#" not in h]) == SESSIONS
    for href in links:
        target = out / href.split("#")[0]
        assert target.is_file(), href
        if "#" in href:
            assert f"id=\"{href.split('#')[1]}\"" in target.read_text().replace("'", '"')
    assert dom.count("<tr>") >= SESSIONS + BROKEN
    page = out / links[-1].split("#")[0]
    still = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=10", page.as_uri())
    later = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=3000", page.as_uri())
    first = re.findall(r'class="count">(\d+) / (\d+)<', still)
    moved = re.findall(r'class="count">(\d+) / (\d+)<', later)
    assert first and len(moved) == len(first)
    assert [int(f) for f, _ in moved] != [int(f) for f, _ in first], (first, moved)
    assert re.search(r'type="range"[^>]*value="[1-9]', later), "the slider did not move"
    shot = tmp_path / "page.png"
    chromium(tmp_path, "--window-size=1000,900", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 150) & (g < 100) & (b < 100)).sum() > 200, "no red skeleton"
    assert ((g > 100) & (r < 100) & (b < 100)).sum() > 200, "no green skeleton"
