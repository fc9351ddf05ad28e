"""Can the tiny Qwen2.5-VL learn to see? A learnability probe (docs/reproduction.md, "Does the tiny policy see?").

Trains a freshly built tiny Qwen2.5-VL (the real classes, ``fgrpo_core.models.tiny``) with a plain
torch loop (AdamW, batch 32, gradient clip 1) on one synthetic question family, cross-entropy on the
answer only, and prints validation accuracy every ``--eval-every`` steps. The answer is the option's
*word* by default (``--word 0``: the letter); validation scores every option by its log-probability
and takes the best, so chance is the mean of 1/k. It is a measurement, not a stage: it isolates
"does the image reach the answer" from the trace format, SFT and RL.

Besides the project's task families it knows two probe families:
  half    "Is the <object> in the left or right half of the image?"  (pure position)
  colour  "What colour is the <shape>?" (4 options)                   (pure content)
and these interventions (each one flag; see the doc for what each measured):
  --init S        scale every random matrix by S (same as model.tiny.init_std = 0.02*S)
  --side F        object size factor (the generator's SIDE_FRAC, 0.26)
  --bg x          a horizontal red / vertical blue ramp on the background (--amp levels)
  --bg all        the same ramp over the whole image, objects included
  --single 1      one object per scene
  --qfirst 1      question before the image in the user turn
  --caption P     share of batches that train "Describe the objects in the image." captions
  --layers/--hid/--vdepth/--vhid   a bigger tiny config

    .venv/bin/python bench/vision_probe.py --task half --bg all --amp 80 --single 1 --init 4 --steps 1000

Cost: ~0.3-0.5 s a step on one thread of the 2-core machine (the default config).
"""
import argparse, random, time, math, sys, os
import torch, numpy as np
torch.set_num_threads(int(os.environ.get("T", "1")))
from fgrpo_core.config import SyntheticDataParams, TinyModelParams
from fgrpo_core.data.synthetic import generate_item
from fgrpo_core.models.tiny import build_tiny_model
from fgrpo_core.prompts import prompt_text, LETTERS
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
import fgrpo_core.prompts as PR
_bm = PR.build_messages
def build_messages(q, c):
    m = _bm(q, c)
    if a.qfirst: m[-1]["content"] = m[-1]["content"][::-1]
    return m

ap = argparse.ArgumentParser()
ap.add_argument("--task", default="relation_2d")
ap.add_argument("--steps", type=int, default=800)
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--n", type=int, default=4000)
ap.add_argument("--size", type=int, default=112)
ap.add_argument("--minobj", type=int, default=2)
ap.add_argument("--maxobj", type=int, default=4)
ap.add_argument("--vdepth", type=int, default=2); ap.add_argument("--vhid", type=int, default=64)
ap.add_argument("--layers", type=int, default=2); ap.add_argument("--hid", type=int, default=128)
ap.add_argument("--caption", type=float, default=0.0, help="share of batches that are caption targets")
ap.add_argument("--cap-mode", default="grid")
ap.add_argument("--eval-every", type=int, default=200)
ap.add_argument("--bg", default="")
ap.add_argument("--amp", type=float, default=35)
ap.add_argument("--single", type=int, default=0)
ap.add_argument("--word", type=int, default=1)
ap.add_argument("--qfirst", type=int, default=0)
ap.add_argument("--init", type=float, default=1.0)
ap.add_argument("--side", type=float, default=0.26)
a = ap.parse_args()

if a.bg:
    import fgrpo_core.data.render as R
    from PIL import Image
    _orig = R.draw_background
    def bg(size, hy):
        img = np.asarray(_orig(size, hy)).astype(np.int16)
        xs = np.linspace(-1, 1, size)[None, :]; ys = np.linspace(-1, 1, size)[:, None]
        img[..., 0] += (xs * 35).astype(np.int16)
        img[..., 2] += (ys * 35).astype(np.int16)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if a.bg == "all":
        _orig_render = R.render
        def render_all(size, hy, shapes):
            img = np.asarray(_orig_render(size, hy, shapes)).astype(np.int16)
            xs = np.linspace(-1, 1, size)[None, :]; ys = np.linspace(-1, 1, size)[:, None]
            img[..., 0] += (xs * a.amp).astype(np.int16)
            img[..., 2] += (ys * a.amp).astype(np.int16)
            return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        SYR = __import__("fgrpo_core.data.synthetic", fromlist=["render"])
        SYR.render = render_all
    else:
        R.draw_background = bg
import fgrpo_core.data.synthetic as SY
def _ask_half(scene, rng):
    objs = scene["objects"]; W = scene["width"]
    cands = [o for o in objs if abs((o["box"][0]+o["box"][2])/2 - W/2) > 0.08*W]
    if not cands: return None
    o = rng.choice(cands); side = "left" if (o["box"][0]+o["box"][2])/2 < W/2 else "right"
    choices, idx = SY._shuffled(rng, ["left", "right"], side)
    return SY.QuestionSpec("half", "h", f"Is the {o['name']} in the left or right half of the image?", choices, idx, [o["id"]])
def _ask_colour(scene, rng):
    objs = scene["objects"]; o = rng.choice(objs)
    others = [c for c in SY.COLOURS if c != o["color"]]
    choices, idx = SY._shuffled(rng, [o["color"]] + rng.sample(others, 3), o["color"])
    return SY.QuestionSpec("colour", "c", f"What colour is the {o['shape']}?", choices, idx, [o["id"]])
SY.SIDE_FRAC = a.side
if a.single:
    def _ms(rng, size, mn, mx):
        for _ in range(1000):
            got = SY._scene_or_none(rng, size, 1)
            if got is not None: return got
    SY.make_scene = _ms
SY.ASKERS["half"] = _ask_half; SY.ASKERS["colour"] = _ask_colour
tp = TinyModelParams(hidden_size=a.hid, num_hidden_layers=a.layers, intermediate_size=2*a.hid,
                     vision_hidden_size=a.vhid, vision_depth=a.vdepth, vision_num_heads=max(1, a.vhid//32),
                     vision_intermediate_size=2*a.vhid)
mdir = f"/tmp/probe-model-{a.layers}-{a.hid}-{a.vdepth}-{a.vhid}"
if not os.path.exists(mdir): build_tiny_model(mdir, tp)
proc = AutoProcessor.from_pretrained(mdir)
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(mdir, dtype=torch.float32)
tok = proc.tokenizer
if a.init != 1.0:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2: p.mul_(a.init)
sp = SyntheticDataParams(image_size=a.size, min_objects=a.minobj, max_objects=max(a.minobj, a.maxobj))
sp = sp.model_copy(update={"tasks": a.task.split(",")})  # the probe families are not params values
mp = (a.size*a.size)
t0=time.time()
def items(split, n):
    return [generate_item(sp, split, i, 3136, max(mp, 12544)).sample for i in range(n)]
train = items("sft", a.n); val = items("val", 256)
print(f"data {time.time()-t0:.0f}s", flush=True)

def caption(s):
    W = s.scene["width"]; H = s.scene["height"]
    parts = []
    for o in sorted(s.scene["objects"], key=lambda o: o["box"][0]):
        b = o["box"]; cx = (b[0]+b[2])/2; cy=(b[1]+b[3])/2
        if a.cap_mode == "grid":
            col = "left" if cx < W/3 else ("middle" if cx < 2*W/3 else "right")
            row = "top" if cy < H/2 else "bottom"
            parts.append(f"{o['name']} {row} {col}")
        else:
            parts.append(f"{o['name']} [{int(b[0])}, {int(b[1])}, {int(b[2])}, {int(b[3])}]")
    return ". ".join(parts) + "."

def encode(batch, cap=False):
    texts, imgs, tgts = [], [], []
    for s in batch:
        if cap:
            msgs = build_messages("Describe the objects in the image.", [])
            tgt = caption(s)
        else:
            msgs = build_messages(s.question, s.choices)
            tgt = s.choices[LETTERS.index(s.answer)] if a.word else s.answer
        texts.append(prompt_text(proc, msgs) + tgt + "<|im_end|>"); imgs.append(s.image); tgts.append(tgt)
    tok.padding_side = "right"
    enc = proc(text=texts, images=imgs, return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    for i, tgt in enumerate(tgts):
        n = len(tok(tgt + "<|im_end|>")["input_ids"])
        L = int(enc["attention_mask"][i].sum())
        labels[i, L-n:L] = enc["input_ids"][i, L-n:L]
    enc["labels"] = labels
    return enc

letter_ids = [tok(l)["input_ids"][0] for l in LETTERS[:6]]
@torch.no_grad()
def evaluate():
    if a.word: return evaluate_word()
    return evaluate_letter()

@torch.no_grad()
def evaluate_word():
    model.eval(); per={}; correct=0; ch=0
    for i in range(0, len(val), 32):
        b = val[i:i+32]
        texts, imgs, meta = [], [], []
        for j, s in enumerate(b):
            p = prompt_text(proc, build_messages(s.question, s.choices))
            for c in s.choices:
                texts.append(p + c + "<|im_end|>"); imgs.append(s.image); meta.append((j, c))
        tok.padding_side = "right"
        enc = proc(text=texts, images=imgs, return_tensors="pt", padding=True)
        logits = model(**enc).logits.log_softmax(-1)
        scores = {}
        for r, (j, c) in enumerate(meta):
            n = len(tok(c + "<|im_end|>")["input_ids"]); L = int(enc["attention_mask"][r].sum())
            ids = enc["input_ids"][r, L-n:L]
            lp = logits[r, L-n-1:L-1].gather(-1, ids[:, None]).sum()
            scores.setdefault(j, []).append((float(lp), c))
        for j, s in enumerate(b):
            pred = max(scores[j])[1]; ok = pred == s.choices[LETTERS.index(s.answer)]
            correct += ok; ch += 1/len(s.choices); per.setdefault(s.task, []).append(ok)
    model.train()
    return correct/len(val), ch/len(val), {t: round(float(np.mean(v)),3) for t, v in per.items()}

@torch.no_grad()
def evaluate_letter():
    model.eval(); correct=0; ch=0; per={}
    for i in range(0, len(val), 64):
        b = val[i:i+64]
        texts = [prompt_text(proc, build_messages(s.question, s.choices)) for s in b]
        tok.padding_side = "left"
        enc = proc(text=texts, images=[s.image for s in b], return_tensors="pt", padding=True)
        out = model(**enc, logits_to_keep=1).logits[:, -1]
        for j, s in enumerate(b):
            k = len(s.choices); pred = int(out[j, letter_ids[:k]].argmax())
            ok = LETTERS[pred] == s.answer; correct += ok; ch += 1/k
            per.setdefault(s.task, []).append(ok)
    model.train()
    return correct/len(val), ch/len(val), {t: round(float(np.mean(v)),3) for t, v in per.items()}

opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
rng = random.Random(0)
model.train(); t0 = time.time(); losses=[]
for step in range(1, a.steps+1):
    cap = rng.random() < a.caption
    b = rng.sample(train, a.bs)
    enc = encode(b, cap)
    loss = model(**enc).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); opt.zero_grad()
    losses.append(loss.item())
    if step % a.eval_every == 0 or step == a.steps:
        acc, chance, per = evaluate()
        print(f"step {step} loss {np.mean(losses[-50:]):.3f} val acc {acc:.3f} chance {chance:.3f} {per} {time.time()-t0:.0f}s", flush=True)
