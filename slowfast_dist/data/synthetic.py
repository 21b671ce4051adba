"""A small synthetic AVA-format data set whose actions are motion patterns.

Layout under OUT: frames/<vid>/<vid>_%06d.jpg (1-based), videos/<vid>.mp4 (H.264, frame 0 =
second 900), frame_lists/{train,val}.csv, annotations/{ava_train_v2.2.csv, ava_val_v2.2.csv,
ava_train_predicted_boxes.csv, ava_val_predicted_boxes.csv, ava_val_excluded_timestamps_v2.2.csv,
ava_action_list_v2.2.pbtxt}. Keyframes are seconds 902.. of each video.
"""
import math
import os

import numpy as np

ACTIONS = ["stand", "walk", "jump", "wave", "spin", "near"]  # ids 1..6; "near" co-occurs


def _draw(img, cx, cy, act, t, rng_phase):
    h, w = img.shape[:2]
    bw, bh = 10, 24
    x1, y1 = int(cx - bw / 2), int(cy - bh / 2)
    img[max(y1, 0):max(y1 + bh, 0), max(x1, 0):max(x1 + bw, 0)] = (200, 180, 160)
    if act == "wave":  # a limb that swings up and down
        ly = int(cy - bh / 2 + 6 + 6 * math.sin(t * 1.2 + rng_phase))
        img[max(ly, 0):max(ly + 3, 0), max(x1 + bw, 0):max(x1 + bw + 8, 0)] = (60, 60, 220)
    if act == "spin":  # a marker that moves around the body
        a = t * 0.8 + rng_phase
        mx, my = int(cx + 6 * math.cos(a)), int(cy + 6 * math.sin(a))
        img[max(my - 2, 0):max(my + 2, 0), max(mx - 2, 0):max(mx + 2, 0)] = (220, 60, 60)


def make_synthetic(out, videos=4, seconds=8, persons=2, seed=0, width=128, height=96, fps=30):
    """Write the tree; returns the list of video ids. Deterministic for a seed."""
    import av
    from PIL import Image
    rng = np.random.default_rng(seed)
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
        pos = [(rng.uniform(20, width - 20), rng.uniform(20, height - 20)) for _ in range(persons)]
        vel = [rng.choice([-1.0, 1.0]) * 0.8 for _ in range(persons)]
        phase = [rng.uniform(0, 6.28) for _ in range(persons)]
        os.makedirs(os.path.join(out, "frames", vid), exist_ok=True)
        container = av.open(os.path.join(out, "videos", f"{vid}.mp4"), "w")
        st = container.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        centres = []
        for f in range(n_frames):
            img = np.full((height, width, 3), 40, np.uint8)
            cs = []
            for p in range(persons):
                cx, cy = pos[p]
                if acts[p] == "walk":
                    cx = 15 + (cx - 15 + vel[p] * f) % (width - 30)
                if acts[p] == "jump":
                    cy = cy - 8 * abs(math.sin(f * 0.3 + phase[p]))
                _draw(img, cx, cy, acts[p], f, phase[p])
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
                box = [max(cx - 7, 0) / width, max(cy - 14, 0) / height,
                       min(cx + 7, width) / width, min(cy + 14, height) / height]
                b = ",".join(f"{x:.3f}" for x in box)
                ids = [ACTIONS.index(acts[p]) + 1]
                if any(q != p and math.dist(cs[q], cs[p]) < 30 for q in range(persons)):
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
