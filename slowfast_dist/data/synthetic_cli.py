"""slowfast-dist make-synthetic OUT: write a small synthetic AVA-format data set."""
import re


def add_arguments(parser):
    # The defaults are the set `make demo` trains on (9 train + 3 val videos, ~10 s to write).
    parser.add_argument("out", help="folder to write the AVA-format tree into")
    parser.add_argument("--videos", type=int, default=12, help="videos (every 4th is val)")
    parser.add_argument("--seconds", type=int, default=16, help="labelled keyframe seconds per video")
    parser.add_argument("--persons", type=int, default=2, help="persons per video")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--size", default="128x96", metavar="WxH",
                        help="frame size, even sides, at least 64x48 (default 128x96); persons "
                             "grow with it, boxes are normalised")
    parser.add_argument("--texture", action="store_true",
                        help="photo-like frames (textured scene, slow pan, camera noise) that cost "
                             "about as much to decode as real movie frames; default: flat grey")


def parse_size(text):
    """'640x360' -> (640, 360); anything that cannot be written is a one-line UserError."""
    from slowfast_dist.data.synthetic import size_problem
    from slowfast_dist.errors import UserError

    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise UserError(f"--size {text}: expected WIDTHxHEIGHT, e.g. 640x360")
    width, height = int(match[1]), int(match[2])
    problem = size_problem(width, height)
    if problem:
        raise UserError(f"--size {text}: {problem}")
    return width, height


def run(args) -> int:
    from slowfast_dist.data.synthetic import make_synthetic
    from slowfast_dist.errors import UserError

    for name in ("videos", "seconds", "persons"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    width, height = parse_size(args.size)
    try:
        vids = make_synthetic(args.out, args.videos, args.seconds, args.persons, args.seed,
                              width=width, height=height, texture=args.texture)
    except OSError as e:
        raise UserError(f"{e.filename or args.out}: cannot write the data set ({e.strerror})") from None
    print(f"wrote {len(vids)} videos of {width}x{height}{' textured' if args.texture else ''} "
          f"frames under {args.out}")
    return 0
