"""The HTML pages of the score flow, generated from the arrays: no matplotlib, no server, no CDN.

- `session_page`: one scored session. Per repetition, the original motion (red) and the
  corrected one (green), seen from the side and from the front, animated as SVG paths by a few
  lines of inline JavaScript (play/pause, a frame slider, a frame counter), with the cues and the
  per-joint deviations beside them. The first frame is drawn into the SVG itself, so the page
  shows the skeletons even with scripts off. Long repetitions are thinned to at most
  `MAX_FRAMES` frames, and the page says so.
- `overview_page`: one score run (`<out>/index.html`): its sessions with links to their pages,
  counts per mistake and per exercise, the repetitions not scored and the unsure ones, and the
  errors with their reasons.

Every string that comes from an upload or a label goes through model.data.names.html_text.
Motions travel in the page as base64 of little-endian int16 SVG coordinates: per repetition
[motion (original, corrected)][view (side, front)][frame][joint][x, y].
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np

from model.data.names import html_text as esc
from model.data.skeletons import Skeleton
from model.data.stats import evenly_spaced
from model.settings import CORRECT

MAX_FRAMES = 48
VIEW_W, VIEW_H, MARGIN = 2000, 2400, 120
#: (title, horizontal axis of the normalised frame: x forward, y left); vertical is z (up).
VIEWS = (("side", 0), ("front", 1))
MOTIONS = (("original", "#d62728"), ("corrected", "#2ca02c"))

STYLE = """body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}
.rep{border-top:1px solid #ccc;padding:12px 0}.row{display:flex;gap:24px;flex-wrap:wrap}
.side{flex:1;min-width:320px}
.ok{color:#2a7d2a}.bad{color:#b22}.warn{background:#fee;padding:6px}.note{color:#666}
.anim svg{width:200px;height:240px;background:#fafafa;border:1px solid #ddd;margin-right:6px}
.anim .ctl{display:flex;gap:8px;align-items:center}.anim input[type=range]{width:260px}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.legend span{margin-right:12px}"""

PLAYER_JS = """(function(){
function decode(b64){var s=atob(b64),a=new Int16Array(s.length/2);
for(var i=0;i<a.length;i++){var v=s.charCodeAt(2*i)|(s.charCodeAt(2*i+1)<<8);
a[i]=v>32767?v-65536:v;}return a;}
document.querySelectorAll('.anim').forEach(function(el){
var n=+el.dataset.frames,J=+el.dataset.joints,bones=JSON.parse(el.dataset.bones);
var xy=decode(el.dataset.motion),paths=el.querySelectorAll('path[data-m]');
var slider=el.querySelector('input'),count=el.querySelector('.count'),
btn=el.querySelector('button'),f=0,timer=null,ms=+el.dataset.ms;
function draw(k){f=k;paths.forEach(function(p){
var base=((+p.dataset.m*2+(+p.dataset.v))*n+k)*J*2,d='';
bones.forEach(function(b){var i=base+2*b[0],j=base+2*b[1];
d+='M'+xy[i]+' '+xy[i+1]+'L'+xy[j]+' '+xy[j+1];});p.setAttribute('d',d);});
slider.value=k;slider.setAttribute('value',k);count.textContent=(k+1)+' / '+n;}
function play(){if(timer)return;timer=setInterval(function(){draw((f+1)%n);},ms);
btn.textContent='pause';}
function pause(){clearInterval(timer);timer=null;btn.textContent='play';}
btn.addEventListener('click',function(){timer?pause():play();});
slider.addEventListener('input',function(){pause();draw(+slider.value);});
play();});})();"""


@dataclass(frozen=True)
class Motion:
    """One repetition's original and corrected motions in the model's normalised frame."""

    original: np.ndarray
    corrected: np.ndarray


#: Per view (VIEWS), the normalised frame's horizontal and vertical axes it shows.
_VIEW_AXES = np.array([[h, 2] for _, h in VIEWS])
_CENTRE = np.array([VIEW_W, VIEW_H]) / 2


def projected(motion: Motion, max_frames: int = MAX_FRAMES) -> tuple[np.ndarray, int]:
    """int16 SVG coordinates (motion, view, frame, joint, xy) of both motions on a common time
    base of at most max_frames frames, both views fitted in the viewBox at one scale; and the
    number of frames of the longer motion. Coordinates that are not finite are left out of the
    fit and drawn at 0."""
    longest = max(len(motion.original), len(motion.corrected))
    shown = evenly_spaced(longest, max_frames)
    frames = []
    for poses in (motion.original, motion.corrected):
        n = len(poses)
        idx = shown if n == longest else np.minimum(
            (shown * (n - 1) / max(1, longest - 1)).round().astype(int), n - 1)
        frames.append(np.asarray(poses)[idx])
    both = np.stack(frames).astype(np.float64)  # (motion, frame, joint, 3)
    views = both[..., _VIEW_AXES].transpose(0, 3, 1, 2, 4)  # (m, v, f, j, 2), one gather
    views[..., 1] *= -1
    finite = bool(np.isfinite(views).all())
    if not finite:
        views = np.where(np.isfinite(views), views, np.nan)
    low, high = (np.min, np.max) if finite else (np.nanmin, np.nanmax)
    lo = low(views, axis=(0, 2, 3))  # (v, 2)
    span = high(views, axis=(0, 2, 3)) - lo
    scale = min((VIEW_W - 2 * MARGIN) / max(span[:, 0].max(), 1e-6),
                (VIEW_H - 2 * MARGIN) / max(span[:, 1].max(), 1e-6))
    offset = _CENTRE - (lo + span / 2)[:, None, None, :] * scale
    xy = views * scale + offset[None]
    if not finite:
        xy = np.nan_to_num(xy, nan=0.0)
    return xy.round().astype("<i2", order="C"), longest


def _path(xy: np.ndarray, bones: list[tuple[int, int]]) -> str:
    """The SVG path of one frame's bones (the player script draws the same)."""
    points = xy.tolist()  # Python ints format faster than numpy scalars
    return "".join(f"M{points[a][0]} {points[a][1]}L{points[b][0]} {points[b][1]}"
                   for a, b in bones)


@cache
def _bones(skeleton: Skeleton) -> tuple[list[tuple[int, int]], str]:
    """A skeleton's bones as joint indices, and as the JSON the player script reads."""
    bones = skeleton.bone_indices()
    return bones, json.dumps(bones, separators=(",", ":"))


def animation(motion: Motion, skeleton: Skeleton, fps: float, label: str) -> str:
    """The animated side and front views of one repetition, with its controls."""
    xy, longest = projected(motion)
    n = xy.shape[2]
    bones, bones_json = _bones(skeleton)
    step_ms = max(15, round(1000 * longest / max(1, n) / max(fps, 1.0)))
    svgs = []
    for v, (view, _) in enumerate(VIEWS):
        paths = "".join(
            f"<path data-m='{m}' data-v='{v}' stroke='{colour}' stroke-width='22' fill='none' "
            f"stroke-linecap='round' d='{_path(xy[m, v, 0], bones)}'/>"
            for m, (_, colour) in enumerate(MOTIONS))
        svgs.append(f"<svg viewBox='0 0 {VIEW_W} {VIEW_H}' role='img' "
                    f"aria-label='{view} view, {esc(label)}'><title>{view}</title>{paths}</svg>")
    note = ("" if n == longest else
            f"<p class='note'>{n} of {longest} frames shown (thinned for the page)</p>")
    motion_b64 = binascii.b2a_base64(xy, newline=False).decode("ascii")
    return (f"<div class='anim' data-frames='{n}' data-joints='{skeleton.n_joints}' "
            f"data-ms='{step_ms}' data-bones='{bones_json}' "
            f"data-motion='{motion_b64}'>"
            f"<div>{''.join(svgs)}</div>"
            f"<div class='ctl'><button type='button'>play</button>"
            f"<input type='range' min='0' max='{n - 1}' value='0' aria-label='frame'>"
            f"<span class='count'>1 / {n}</span></div>"
            f"<p class='legend'><span class='bad'>&#9632; original</span>"
            f"<span class='ok'>&#9632; corrected</span> side and front views</p>{note}</div>")


def _deviations(deviations: list[dict]) -> str:
    if not deviations:
        return ""
    rows = "".join(f"<tr><td>{esc(d['joint'])}</td><td>{float(d['cm']):.1f}</td>"
                   f"<td>{esc(d['direction'])}</td><td>{esc(d['moment'])}</td></tr>"
                   for d in deviations)
    return ("<table class='dev'><tr><th>joint</th><th>cm</th><th>direction</th>"
            f"<th>when</th></tr>{rows}</table>")


def _repetition(rep: dict, motion: Motion | None, skeleton: Skeleton, fps: float,
                declared: str) -> str:
    """One repetition: its verdict, the motions or why there are none, its cues, deviations,
    and a warning when the model took it for another exercise than the declared one."""
    cls = "ok" if rep["mistake"] == CORRECT else "bad"
    verdict = "not scored" if rep["error"] else rep["mistake"]
    conf = "" if rep["confidence"] is None else f" ({rep['confidence']:.0%})"
    title = f"repetition {rep['index'] + 1}"
    frames = ("" if rep["start_frame"] is None else
              f"<p class='note'>frames {int(rep['start_frame'])}-{int(rep['end_frame'])}</p>")
    if rep["error"]:
        picture = f"<p class='bad'>not scored: {esc(rep['error'])}</p>"
    elif motion is None:
        picture = f"<p class='note'>{esc(rep.get('note') or 'no motion')}</p>"
    else:
        picture = animation(motion, skeleton, fps, title)
    other = ("" if rep["error"] or rep["exercise"] == declared else
             f"<p class='warn'>the model took this repetition for a {esc(rep['exercise'])}, "
             f"not a {esc(declared)}</p>")
    cues = "".join(f"<li>{esc(c)}</li>" for c in rep["cues"])
    return (f"<div class='rep' id='rep-{rep['index'] + 1}'>"
            f"<h2>Repetition {rep['index'] + 1}: <span class='{cls}'>{esc(verdict)}"
            f"</span>{conf}</h2>{other}<div class='row'>{picture}<div class='side'>{frames}"
            f"<ul>{cues}</ul>{_deviations(rep['deviations'])}</div></div></div>")


def _page(title: str, body: Iterable[str], script: bool) -> str:
    js = f"<script>{PLAYER_JS}</script>" if script else ""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + js + "</body></html>")


def session_page(report: dict, motions: list[Motion | None], skeleton: Skeleton,
                 fps: float, overview: str | None = "index.html") -> str:
    """The self-contained page of one session report (posecoach.report/1)."""
    s = report["summary"]
    mistakes = ", ".join(f"{esc(k)} x{v}" for k, v in s["mistakes"].items()) or "none"
    model = report["model"]
    body = [
        f"<p><a href='{esc(overview)}'>all sessions</a></p>" if overview else "",
        f"<h1>Session {esc(report['session_id'])}</h1>",
        f"<p>{esc(report['subject'])} &middot; {esc(report['declared_exercise'])} &middot; "
        f"{s['repetitions']} repetitions: {s['correct']} correct, {s['unsure']} unsure; "
        f"mistakes: {mistakes}</p>",
    ]
    if s["exercise_disagreement"]:
        body.append(f"<p class='warn'>Most repetitions do not look like a "
                    f"{esc(report['declared_exercise'])}.</p>")
    judged = (f" &middot; judged against a reference ({esc(model['reference'][:12])})"
              if model.get("reference") else "")
    body.append(f"<p class='note'>model {esc(model['name'])} v{esc(model['version'])} &middot; "
                f"dataset version {esc(model['dataset_version'])}{judged}</p>")
    body += [_repetition(rep, motion, skeleton, fps, report["declared_exercise"])
             for rep, motion in zip(report["repetitions"], motions, strict=True)]
    return _page(f"posecoach: {esc(report['session_id'])}", body, script=True)


def _counts_table(title: str, counts: dict[str, int]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>"
                   for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"<h2>{title}</h2><table><tr><th></th><th>repetitions</th></tr>{rows}</table>"


def overview_page(run: dict) -> str:
    """The page of one score run: `run` has model, sessions (page, session_id, subject,
    exercise, repetitions, correct, unsure, failed, mistakes, status), mistakes and exercises
    (counts), unsure (page, session_id, rep, label, confidence), failed (how many repetitions
    could not be scored), failed_reps (page, session_id, rep, reason: those whose sessions'
    summaries list them), errors (input, kind, reason) and duplicates (input, of: the upload
    with the same bytes)."""
    model = run["model"]
    sessions = run["sessions"]
    rows = "".join(
        f"<tr><td><a href='{esc(s['page'])}'>{esc(s['session_id'])}</a></td>"
        f"<td>{esc(s['subject'])}</td><td>{esc(s['exercise'])}</td><td>{s['repetitions']}</td>"
        f"<td>{s['correct']}</td><td>{s['unsure']}</td><td>{s.get('failed', 0)}</td>"
        f"<td>{esc(', '.join(f'{k} x{v}' for k, v in sorted(s['mistakes'].items())))}</td>"
        f"<td>{esc(s['status'])}</td></tr>" for s in sessions)
    unsure = "".join(
        f"<tr><td><a href='{esc(u['page'])}#rep-{int(u['rep']) + 1}'>{esc(u['session_id'])}</a>"
        f"</td><td>{int(u['rep']) + 1}</td><td>{esc(u['label'])}</td>"
        f"<td>{'' if u['confidence'] is None else format(u['confidence'], '.0%')}</td></tr>"
        for u in run["unsure"])
    errors = "".join(f"<tr><td>{esc(e['input'])}</td><td>{esc(e['kind'])}</td>"
                     f"<td>{esc(e['reason'])}</td></tr>" for e in run["errors"])
    duplicates = "".join(f"<tr><td>{esc(d['input'])}</td><td>{esc(d['of'])}</td></tr>"
                         for d in run["duplicates"])
    failed = "".join(
        f"<tr><td><a href='{esc(f['page'])}#rep-{int(f['rep']) + 1}'>{esc(f['session_id'])}</a>"
        f"</td><td>{int(f['rep']) + 1}</td><td>{esc(f['reason'])}</td></tr>"
        for f in run["failed_reps"])
    body = [
        "<h1>Score run</h1>",
        f"<p>{len(sessions)} sessions with reports, {len(run['errors'])} errors, "
        f"{len(run['duplicates'])} duplicates, {run['failed']} repetitions not scored &middot; "
        f"model {esc(model['name'])} v{esc(model['version'])} &middot; {esc(run['time'])}</p>",
        _counts_table("Mistakes", run["mistakes"]),
        _counts_table("Exercises", run["exercises"]),
        f"<h2>Errors ({len(run['errors'])})</h2><table class='errors'><tr><th>input</th>"
        f"<th>kind</th><th>reason</th></tr>{errors}</table>",
        f"<h2>Duplicates ({len(run['duplicates'])})</h2><table class='duplicates'><tr>"
        f"<th>input</th><th>the same bytes as</th></tr>{duplicates}</table>",
        f"<h2>Repetitions not scored ({run['failed']})</h2><table class='failed'><tr>"
        f"<th>session</th><th>repetition</th><th>reason</th></tr>{failed}</table>",
        f"<h2>Unsure repetitions ({len(run['unsure'])})</h2><table class='unsure'><tr>"
        f"<th>session</th><th>repetition</th><th>best guess</th><th>confidence</th></tr>{unsure}"
        "</table>",
        "<h2>Sessions</h2><table class='sessions'><tr><th>session</th><th>subject</th>"
        "<th>exercise</th><th>repetitions</th><th>correct</th><th>unsure</th><th>not scored</th>"
        "<th>mistakes</th>"
        f"<th>this run</th></tr>{rows}</table>",
    ]
    return _page("posecoach: score run", body, script=False)
