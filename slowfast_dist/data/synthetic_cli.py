"""slowfast-dist make-synthetic OUT: write a small synthetic AVA-format data set."""


def add_arguments(parser):
    # The defaults are the set `make demo` trains on (9 train + 3 val videos, ~10 s to write).
    parser.add_argument("out", help="folder to write the AVA-format tree into")
    parser.add_argument("--videos", type=int, default=12, help="videos (every 4th is val)")
    parser.add_argument("--seconds", type=int, default=16, help="labelled keyframe seconds per video")
    parser.add_argument("--persons", type=int, default=2, help="persons per video")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from slowfast_dist.data.synthetic import make_synthetic
    from slowfast_dist.errors import UserError

    for name in ("videos", "seconds", "persons"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    try:
        vids = make_synthetic(args.out, args.videos, args.seconds, args.persons, args.seed)
    except OSError as e:
        raise UserError(f"{e.filename or args.out}: cannot write the data set ({e.strerror})") from None
    print(f"wrote {len(vids)} videos under {args.out}")
    return 0
