"""A small synthetic AVA-format data set whose actions are motion patterns.

Layout under OUT: frames/<vid>/<vid>_%06d.jpg (1-based), videos/<vid>.mp4 (H.264, frame 0 =
second 900), frame_lists/{train,val}.csv, annotations/{ava_train_v2.2.csv, ava_val_v2.2.csv,
ava_train_predicted_boxes.csv, ava_val_predicted_boxes.csv, ava_val_excluded_timestamps_v2.2.csv,
ava_action_list_v2.2.pbtxt}. Keyframes are seconds 902.. of each video.

Frames are flat grey by default. With `texture=True` each video gets a photo-like backdrop (1/f
noise in colour, a lighting gradient, hard-edged shapes) that pans slowly under camera noise, so
a JPEG frame costs about as much to decode as a real movie frame. Persons, their motions and the
boxes scale with the frame size relative to 128x96 (never below it); boxes are normalised, so the
annotation files do not depend on the size or the texture.
"""
import math
import os

import numpy as np

ACTIONS = ["stand", "walk", "jump", "wave", "spin", "near"]  # ids 1..6; "near" co-occurs
BASE_SIZE = (128, 96)  # the size the person and motion constants below are written for
MIN_SIZE = (64, 48)  # persons start 20 px from the edges and walk within 15 px of them
MAX_SIDE = 7680


def size_problem(width, height):
    """Why a frame size cannot be written (None when it can): H.264 yuv420p needs even sides."""
    if width % 2 or height % 2:
        return "width and height must be even (H.264 yuv420p)"
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        return f"must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]} to fit the persons"
    if max(width, height) > MAX_SIDE:
        return f"must be at most {MAX_SIDE} pixels a side"
    return None


def person_scale(width, height):
    """Factor on the 10x24 person and its motions: 1 up to 128x96, then grows with the frame."""
    return max(1.0, min(width / BASE_SIZE[0], height / BASE_SIZE[1]))


def _draw(img, cx, cy, act, t, rng_phase, scale=1.0):
    bw, bh = round(10 * scale), round(24 * scale)
    x1, y1 = int(cx - bw / 2), int(cy - bh / 2)
    img[max(y1, 0):max(y1 + bh, 0), max(x1, 0):max(x1 + bw, 0)] = (200, 180, 160)
    if act == "wave":  # a limb that swings up and down
        ly = int(cy - bh / 2 + 6 * scale + 6 * scale * math.sin(t * 1.2 + rng_phase))
        lx, thick, length = x1 + bw, round(3 * scale), round(8 * scale)
        img[max(ly, 0):max(ly + thick, 0), max(lx, 0):max(lx + length, 0)] = (60, 60, 220)
    if act == "spin":  # a marker that moves around the body
        a = t * 0.8 + rng_phase
        mx, my = int(cx + 6 * scale * math.cos(a)), int(cy + 6 * scale * math.sin(a))
        half = round(2 * scale)
        img[max(my - half, 0):max(my + half, 0),
            max(mx - half, 0):max(mx + half, 0)] = (220, 60, 60)


def _pink_noise(rng, height, width, beta):
    """A zero-mean, unit-std field whose amplitude spectrum falls as 1/f**beta.

    Natural images have beta ~1-1.5; 1.4 gives JPEG sizes and decode times of real movie frames.
    """
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0 / max(height, width)  # the mean: weight it like the lowest frequency
    spectrum = np.fft.rfft2(rng.standard_normal((height, width), dtype=np.float32))
    field = np.fft.irfft2(spectrum / freq ** beta, s=(height, width)).astype(np.float32)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _textured_backdrop(rng, height, width, lo, hi):
    """A photo-like uint8 [height, width, 3] image with values in [lo, hi]."""
    luma = _pink_noise(rng, height, width, 1.4)
    red_green = _pink_noise(rng, height, width, 1.8)  # colour varies more smoothly than light
    blue_yellow = _pink_noise(rng, height, width, 1.8)
    img = np.empty((height, width, 3), np.float32)
    img[...] = rng.uniform(60, 170, 3).astype(np.float32)  # the scene's dominant colour
    img += 28 * luma[..., None]
    img[..., 0] += 12 * red_green
    img[..., 1] -= 6 * (red_green + blue_yellow)
    img[..., 2] += 12 * blue_yellow
    del luma, red_green, blue_yellow
    slope_x, slope_y = rng.uniform(-25, 25, 2)  # lighting falls off across the scene
    img += slope_x * np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    img += slope_y * np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    for _ in range(12):  # walls, furniture: hard edges that keep the texture beneath
        x1, x2 = np.sort(rng.integers(0, width, 2))
        y1, y2 = np.sort(rng.integers(0, height, 2))
        region = img[y1:y2, x1:x2]
        shade, tint = rng.uniform(0.5, 1.0), rng.uniform(-40, 40, 3).astype(np.float32)
        if rng.random() < 0.5:  # an ellipse inscribed in the box
            ry, rx = max((y2 - y1) / 2, 1), max((x2 - x1) / 2, 1)
            yy = (np.arange(y2 - y1, dtype=np.float32)[:, None] - ry + 0.5) / ry
            xx = (np.arange(x2 - x1, dtype=np.float32)[None, :] - rx + 0.5) / rx
            inside = yy * yy + xx * xx <= 1
            region[inside] = region[inside] * shade + tint
        else:
            region *= shade
            region += tint
    np.clip(img, lo, hi, out=img)
    return img.astype(np.uint8)


class _TexturedScene:
    """Photo-like frames for one video: a textured scene under a slow pan and camera noise.

    The scene is made once per video with numpy (~2 s at 1080p); a frame is then one vectorised
    add: a window of the scene that pans slowly (+-4% of the width, 8 s period) plus a window of a
    fixed Gaussian noise field (sigma 2 grey levels) at a per-frame offset, so consecutive frames
    always differ.
    """

    NOISE_CLIP = 6  # |noise| <= 6 and the scene within [6, 249]: uint8 addition cannot wrap
    NOISE_SHIFT = 8  # the noise window moves within an 8x8 square

    def __init__(self, rng, width, height, fps):
        self.width, self.height = width, height
        self.pan_x, self.pan_y = max(round(0.04 * width), 1), max(round(0.02 * height), 1)
        self.period = 8 * fps
        clip, shift = self.NOISE_CLIP, self.NOISE_SHIFT
        self.scene = _textured_backdrop(rng, height + 2 * self.pan_y, width + 2 * self.pan_x,
                                        clip, 255 - clip)
        noise = np.rint(2 * rng.standard_normal((height + shift, width + shift, 3), np.float32))
        self.noise = np.clip(noise, -clip, clip).astype(np.int8).view(np.uint8)  # two's complement
        self.noise_order = rng.permutation(shift * shift)  # consecutive frames: other windows
        self.buf = np.empty((height, width, 3), np.uint8)

    def frame(self, f):
        """Frame f as a writable uint8 [H, W, 3] array, reused by the next call."""
        angle = 2 * math.pi * f / self.period
        ox = self.pan_x + round(self.pan_x * math.sin(angle))
        oy = self.pan_y + round(self.pan_y * math.sin(0.5 * angle))
        ny, nx = divmod(int(self.noise_order[f % len(self.noise_order)]), self.NOISE_SHIFT)
        np.add(self.scene[oy:oy + self.height, ox:ox + self.width],
               self.noise[ny:ny + self.height, nx:nx + self.width], out=self.buf)
        return self.buf


def make_synthetic(out, videos=4, seconds=8, persons=2, seed=0, width=128, height=96, fps=30,
                   texture=False):
    """Write the tree; returns the list of video ids. Deterministic for a seed.

    `texture` changes only the pixels: the boxes and labels are those of the flat set.
    """
    import av
    from PIL import Image
    problem = size_problem(width, height)
    if problem:
        raise ValueError(f"size {width}x{height}: {problem}")
    rng = np.random.default_rng(seed)
    scale = person_scale(width, height)
    for sub in ("frames", "videos", "frame_lists", "annotations"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    ann = os.path.join(out, "annotations")
    gt = {"train": [], "val": []}
    pred = {"train": [], "val": []}
    lists = {"train": ["original_vido_id video_idx frame_id path labels"],
             "val": ["original_vido_id video_idx frame_id path labels"]}
    n_frames = (seconds + 3) * fps  # seconds 900 .. 903 + seconds
    vids = [f"syn{v:03d}" for v in range(videos)]
    for v, vid in enumerate(vids):
        split = "val" if v % 4 == 3 else "train"
        acts = [ACTIONS[rng.integers(0, 5)] for _ in range(persons)]
        margin = 20 * scale
        pos = [(rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
               for _ in range(persons)]
        vel = [rng.choice([-1.0, 1.0]) * 0.8 * scale for _ in range(persons)]
        phase = [rng.uniform(0, 6.28) for _ in range(persons)]
        # its own generator, so the texture leaves the boxes and labels as they are
        scene = (_TexturedScene(np.random.default_rng([seed, v]), width, height, fps)
                 if texture else None)
        os.makedirs(os.path.join(out, "frames", vid), exist_ok=True)
        container = av.open(os.path.join(out, "videos", f"{vid}.mp4"), "w")
        st = container.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        if width * height > BASE_SIZE[0] * BASE_SIZE[1]:
            # libx264's default preset (medium) writes 1080p at ~3 frames/s on 2 cores, superfast
            # at ~10-20; it keeps CABAC and deblocking, so decoding costs what a real video's does
            st.options = {"preset": "superfast", "crf": "23"}
        centres = []
        for f in range(n_frames):
            img = scene.frame(f) if scene else np.full((height, width, 3), 40, np.uint8)
            cs = []
            for p in range(persons):
                cx, cy = pos[p]
                if acts[p] == "walk":
                    cx = 15 * scale + (cx - 15 * scale + vel[p] * f) % (width - 30 * scale)
                if acts[p] == "jump":
                    cy = cy - 8 * scale * abs(math.sin(f * 0.3 + phase[p]))
                _draw(img, cx, cy, acts[p], f, phase[p], scale)
                cs.append((cx, cy))
            centres.append(cs)
            Image.fromarray(img).save(os.path.join(out, "frames", vid, f"{vid}_{f + 1:06d}.jpg"),
                                      quality=95)
            lists[split].append(f'{vid} {v} {f} {vid}/{vid}_{f + 1:06d}.jpg ""')
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(pkt)
        for pkt in st.encode():
            container.mux(pkt)
        container.close()
        for sec in range(902, 902 + seconds):
            cs = centres[(sec - 900) * fps]
            for p in range(persons):
                cx, cy = cs[p]
                box = [max(cx - 7 * scale, 0) / width, max(cy - 14 * scale, 0) / height,
                       min(cx + 7 * scale, width) / width, min(cy + 14 * scale, height) / height]
                b = ",".join(f"{x:.3f}" for x in box)
                ids = [ACTIONS.index(acts[p]) + 1]
                if any(q != p and math.dist(cs[q], cs[p]) < 30 * scale for q in range(persons)):
                    ids.append(ACTIONS.index("near") + 1)
                for i in ids:
                    gt[split].append(f"{vid},{sec},{b},{i},{p}")  # AVA: 8th column = person id
                    pred[split].append(f"{vid},{sec},{b},{i},0.95")
            # a false positive with a low score
            fx, fy = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
            pred[split].append(f"{vid},{sec},{fx:.3f},{fy:.3f},{fx + 0.2:.3f},{fy + 0.2:.3f},,0.3")
    for split in ("train", "val"):
        with open(os.path.join(out, "frame_lists", f"{split}.csv"), "w") as f:
            f.write("\n".join(lists[split]) + "\n")
        with open(os.path.join(ann, f"ava_{split}_v2.2.csv"), "w") as f:
            f.write("\n".join(gt[split]) + ("\n" if gt[split] else ""))
        with open(os.path.join(ann, f"ava_{split}_predicted_boxes.csv"), "w") as f:
            f.write("\n".join(pred[split]) + ("\n" if pred[split] else ""))
    open(os.path.join(ann, "ava_val_excluded_timestamps_v2.2.csv"), "w").close()
    with open(os.path.join(ann, "ava_action_list_v2.2.pbtxt"), "w") as f:
        for i, a in enumerate(ACTIONS, 1):
            f.write(f'item {{\n  name: "{a}"\n  id: {i}\n}}\n')
    return vids
