"""slowfast-dist prepare-ava RAW_DIR OUT_DIR: raw AVA movies -> frames and/or short-GOP cuts,
frame lists, and what the annotations lose. Resumable: run the same command again."""

from __future__ import annotations

import sys


def add_arguments(parser):
    parser.add_argument("raw_dir", help="the downloaded movies (any container PyAV opens)")
    parser.add_argument("out_dir", help="where frames/, videos/, frame_lists/ go")
    parser.add_argument("--format", choices=("frames", "video", "both"), default="frames",
                        help="JPEG frames (AVA.PIXEL_SOURCE frames), H.264 cuts (video), or both "
                             "(default: frames)")
    parser.add_argument("--short-side", type=int, default=360, metavar="N",
                        help="downscale to this short side, 0 keeps the source size (default 360: "
                             "the smallest size above the largest training scale, 320; a clip "
                             "costs the loader 4-7x less CPU than at 1080p)")
    parser.add_argument("--gop", type=int, default=32, metavar="N",
                        help="keyframe interval of the H.264 cuts (default 32: a clip read decodes "
                             "at most 31 frames before its first)")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="movies prepared at once (default: one per CPU)")
    parser.add_argument("--annotations", metavar="DIR",
                        help="the AVA annotation CSVs (default: OUT_DIR/annotations)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--chroma", choices=("444", "420"), default="444",
                        help="JPEG chroma subsampling: 444 keeps every colour sample; 420 (as "
                             "PySlowFast's ffmpeg extraction writes) is what DATA.DECODER "
                             "yuv420 reads, and smaller")
    parser.add_argument("--window", type=float, nargs=2, metavar=("START", "END"),
                        help="seconds to keep (default 900 1801, PySlowFast's cut; another "
                             "window breaks AVA's keyframe numbering: for benchmarks only)")


def run(args) -> int:
    import os
    from pathlib import Path

    from slowfast_dist.data import prepare_ava as P
    from slowfast_dist.errors import UserError

    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise UserError(f"{raw}: RAW_DIR is not a folder")
    ann = Path(args.annotations) if args.annotations else out / "annotations"
    if not P.annotation_files(ann):
        raise UserError(f"{ann}: no ava_train_v2.x.csv or ava_val_v2.x.csv (--annotations DIR)")
    for name in ("short_side", "gop", "jobs"):
        if getattr(args, name) < 0 or (name == "gop" and args.gop < 1):
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: out of range")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: must be 1..100")
    window = tuple(args.window) if args.window else P.WINDOW
    if not 0 <= window[0] < window[1]:
        raise UserError(f"--window {window[0]:g} {window[1]:g}: need 0 <= START < END")
    videos = P.find_raw_videos(raw)
    if not videos:
        raise UserError(f"{raw}: no movie files ({', '.join(P.VIDEO_EXTENSIONS)})")
    stems = {}
    for v in videos:
        stems.setdefault(P.video_id(v), []).append(v.name)
    twins = [names for names in stems.values() if len(names) > 1]
    if twins:  # one video id, two files: they would write the same outputs
        raise UserError(f"{raw}: {' and '.join(twins[0])} are one video id; keep one of them"
                        + (f" ({len(twins) - 1} more such pairs)" if len(twins) > 1 else ""))
    jobs = min(args.jobs or os.cpu_count() or 1, len(videos))
    opts = P.PrepareOptions(
        out_dir=str(out), formats=("frames", "video") if args.format == "both" else (args.format,),
        short_side=args.short_side or None, gop=args.gop, quality=args.quality, window=window,
        chroma=args.chroma,
        decoder_threads=max(1, (os.cpu_count() or 1) // jobs))
    if window != P.WINDOW:
        from slowfast_dist.logs import get as get_logger

        get_logger("prepare").warning(
            f"warning: prepare-ava: window {window[0]:g}-{window[1]:g} s is not AVA's: frame 1 "
            "is not second 900, so the annotations will not line up")
    results, failures = _run_jobs(videos, opts, jobs)
    check = P.check_and_list(out, ann)
    report = _report(results, failures, check, opts, ann)
    from slowfast_dist.files import atomic_write

    atomic_write(out / "prepare_report.json",
                 lambda f: f.write(_json(report).encode()), fsync=False)
    print(_summary(report, out, ann, opts), flush=True)
    return 1 if failures else 0


def _run_jobs(videos, opts, jobs):
    """Every movie through prepare_one in `jobs` processes, with progress on stderr; a bad
    movie is one line, the others go on. A worker that dies (a decoder crash, the OOM killer)
    breaks the pool: the movies it left unfinished are tried again one process each, and the
    one that kills its process again is reported."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from slowfast_dist.data import prepare_ava as P

    per_video = round((opts.window[1] - opts.window[0]) * P.FPS)
    todo = [v for v in videos if P.finished(opts.out_dir, P.video_id(v), opts) is None]
    ctx = mp.get_context("spawn")  # no inherited decoder state; the same on every platform
    counter = ctx.Value("q", 0)
    results, failures = [], []
    progress = _Progress(len(videos), len(videos) - len(todo), per_video * len(todo))

    def fail(video, message):
        failures.append({"video": P.video_id(video), "source": str(video), "error": message})
        progress.say(f"prepare-ava: {message}")
        progress.frames_todo = max(progress.frames_todo - per_video, 1)

    def run(batch, workers):
        """Prepare `batch`; returns the movies whose worker died under them."""
        orphans = []
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=P._init_job,
                                 initargs=(counter,)) as pool:
            pending = {pool.submit(_prepare_safely, str(v), opts): v for v in batch}
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    video = pending.pop(future)
                    try:
                        status, value = future.result()
                    except BrokenProcessPool:
                        orphans.append(video)
                        continue
                    if status == "ok":
                        results.append(value)
                        progress.finished(value, counter.value)
                    else:
                        fail(video, value)
                progress.tick(counter.value)
        return orphans

    for video in run(videos, jobs):  # alone now: a second death names its movie
        for again in run([video], 1):
            fail(again, f"{again}: its worker process died while preparing it (a crash in "
                        "the decoder, or killed for memory)")
    progress.close()
    return results, failures


def _prepare_safely(raw, opts):
    import os

    from slowfast_dist.data import prepare_ava as P

    if os.environ.get("SLOWFAST_DIST_FAULT_PREPARE_DIE") == P.video_id(raw):
        os._exit(139)  # fault injection for the tests: this movie's worker dies
    try:
        return "ok", P.prepare_one(raw, opts)
    except P.PrepareError as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001 - one movie's failure must not stop the others
        return "error", f"{raw}: {type(e).__name__}: {P._one_line(e)}"


class _Progress:
    """A bar with ETA on a terminal (redrawn each second), a line every 30 s otherwise (a
    scheduler's log file)."""

    def __init__(self, videos, skipped, frames_todo):
        import time

        self.videos, self.done, self.frames_todo = videos, skipped, max(frames_todo, 1)
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.time()
        if skipped:
            self.say(f"prepare-ava: {skipped} of {videos} movies already prepared, skipped")

    def say(self, line):
        print(("\r\033[K" if self.tty else "") + line, file=sys.stderr, flush=True)

    def finished(self, record, frames):
        if record["status"] == "skipped":
            return
        self.done += 1
        if not self.tty:
            self.say(f"prepare-ava: {record['video']}: {record['frames']} frames "
                     f"{record['size'][0]}x{record['size'][1]} in {record['wall_s']:.0f} s")
        self.tick(frames, force=True)

    def tick(self, frames, force=False):
        import time

        from slowfast_dist.logs import format_duration

        now = time.time()
        if not force and now - self.last < (1.0 if self.tty else 30.0):
            return
        self.last = now
        frac = min(frames / self.frames_todo, 1.0)
        rate = frames / max(now - self.t0, 1e-9)
        eta = (self.frames_todo - frames) / rate if rate > 0 else float("inf")
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        line = (f"prepare-ava [{bar}] {frac:5.1%}  {self.done}/{self.videos} movies  "
                f"{rate:,.0f} frames/s  ETA {format_duration(eta)}")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            print(file=sys.stderr)


def _report(results, failures, check, opts, ann):
    from slowfast_dist.data import prepare_ava as P

    made = [r for r in results if r["status"] == "done"]
    hours = sum(r["frames"] for r in made) / P.FPS / 3600
    stage = {k: sum(r["stage_cpu_s"].get(k, 0.0) for r in made) for k in P.STAGES}
    return {"options": {**opts.__dict__, "annotations": str(ann)},
            "prepared_now": [r["video"] for r in made],
            "skipped": [r["video"] for r in results if r["status"] == "skipped"],
            "failed": failures, "check": check,
            "hours_prepared_now": hours,
            "cpu_s_per_hour_of_video": ({k: v / hours for k, v in stage.items()}
                                        if hours else None),
            "bytes_per_hour_of_video": ({fmt: sum(r["bytes"][fmt] for r in made) / hours
                                         for fmt in opts.formats} if hours else None)}


def _summary(report, out, ann, opts):
    lines = [f"prepare-ava: {len(report['prepared_now'])} prepared, {len(report['skipped'])} "
             f"already done, {len(report['failed'])} failed"]
    for f in report["failed"]:
        lines.append(f"  failed: {f['error']}")
    for split, r in report["check"]["splits"].items():
        missing = r["missing_videos"]
        names = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                           else "")
        lost = r["labels_lost"] / max(r["labels"], 1)
        lines.append(f"  {split}: {r['videos_prepared']}/{r['videos']} videos, "
                     f"{len(r['keyframes_beyond_frames'])} keyframes beyond the frames, "
                     f"{r['labels_lost']:,} of {r['labels']:,} labels lost ({lost:.1%})"
                     + (f"; missing: {names}" if missing else ""))
    if report["check"]["not_in_annotations"]:
        lines.append(f"  {len(report['check']['not_in_annotations'])} prepared movies are in "
                     "no annotation CSV (test set?): left out of the frame lists")
    cost = report["cpu_s_per_hour_of_video"]
    if cost:
        lines.append("  CPU s per hour of video: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in cost.items() if v))
    args = [f"AVA.FRAME_LIST_DIR {out}/frame_lists", f"AVA.ANNOTATION_DIR {ann}"]
    if "frames" in opts.formats:
        args.insert(0, f"AVA.FRAME_DIR {out}/frames")
    if "video" in opts.formats:
        args += ["AVA.PIXEL_SOURCE video", f"AVA.VIDEO_DIR {out}/videos"]
    lines.append(f"  train with: {' '.join(args)}   (report: {out}/prepare_report.json)")
    return "\n".join(lines)


def _json(obj):
    import json

    return json.dumps(obj, indent=1, default=str)
