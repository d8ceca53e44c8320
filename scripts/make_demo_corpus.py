"""Build the demo corpus shipped in src/mmrag_rft/demo_corpus/ (deterministic; outputs are committed).

    .venv/bin/python scripts/make_demo_corpus.py [--out DIR]

Pictures are drawn here with PIL or taken from scikit-image's bundled sample photographs (public domain /
CC0, see the corpus README); every title, caption, passage, table and question is written here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "mmrag_rft" / "demo_corpus"
MAX_SIDE = 256
DEMO_SOURCE = "mmrag-rft demo corpus (written for this project)"

# --- photographs from scikit-image (name, id, title, caption, licence note from skimage's docstrings) ------
PHOTOS = [
    ("chelsea", "img-cat", "Chelsea the cat",
     "Close-up photograph of Chelsea, a tabby cat with green eyes, a pink nose and long white whiskers.",
     "scikit-image sample data `chelsea`: CC0 by the photographer (Stefan van der Walt)"),
    ("coffee", "img-coffee", "Cup of espresso",
     "A red cup of espresso with golden crema, standing on a red saucer with a silver spoon, on a wooden table.",
     "scikit-image sample data `coffee`: CC0 by the photographer (Rachel Michetti)"),
    ("astronaut", "img-astronaut", "Astronaut Eileen Collins",
     "Official portrait of astronaut Eileen Collins smiling in an orange launch suit, holding a helmet, with an "
     "American flag and a Space Shuttle model behind her.",
     "scikit-image sample data `astronaut`: NASA, public domain (no known copyright restrictions)"),
    ("rocket", "img-rocket", "Falcon 9 on the launch pad",
     "A SpaceX Falcon 9 rocket standing upright on its launch pad at night, lit by floodlights, between tall "
     "lightning-protection towers under a dark blue sky.",
     "scikit-image sample data `rocket`: SpaceX, released into the public domain"),
    ("camera", "img-cameraman", "Photographer on a lawn",
     "Black-and-white photograph of a man in a dark coat looking through a camera mounted on a tripod, standing "
     "on a lawn with buildings in the distance.",
     "scikit-image sample data `camera`: CC0 by the photographer (Lav Varshney)"),
    ("hubble_deep_field", "img-deep-field", "Hubble eXtreme Deep Field",
     "Hubble Space Telescope image of a tiny patch of dark sky filled with thousands of faint galaxies, shown as "
     "small white, yellow, red and blue smudges.",
     "scikit-image sample data `hubble_deep_field`: NASA, may be freely used (public domain)"),
    ("coins", "img-coins", "Ancient coins",
     "Black-and-white photograph of twenty-four ancient coins laid out on a dark cloth in four rows of six.",
     "scikit-image sample data `coins`: Brooklyn Museum collection, no known copyright restrictions"),
    ("horse", "img-horse", "Horse silhouette",
     "A solid black silhouette of a horse standing on four legs, facing right, on a white background.",
     "scikit-image sample data `horse`: openclipart, CC0 (Andreas Preuss)"),
]

# --- pictures drawn here ----------------------------------------------------------------------------------


def _canvas(bg: str = "white", size: tuple[int, int] = (256, 256)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGB", size, bg)
    return im, ImageDraw.Draw(im)


def draw_triangle_square() -> Image.Image:
    im, d = _canvas()
    d.polygon([(128, 20), (68, 116), (188, 116)], fill=(220, 30, 30))
    d.rectangle([78, 136, 178, 236], fill=(30, 60, 210))
    return im


def draw_green_circles() -> Image.Image:
    im, d = _canvas((250, 215, 60))
    for cx in (48, 128, 208):
        d.ellipse([cx - 34, 94, cx + 34, 162], fill=(30, 150, 60))
    return im


def draw_circle_hexagon() -> Image.Image:
    im, d = _canvas((235, 235, 235))
    d.ellipse([20, 88, 100, 168], fill=(245, 140, 20))
    cx, cy, r = 180, 128, 48
    pts = [(cx + r * np.cos(np.pi / 3 * k), cy + r * np.sin(np.pi / 3 * k)) for k in range(6)]
    d.polygon([(round(x), round(y)) for x, y in pts], fill=(130, 50, 170))
    return im


def draw_house() -> Image.Image:
    im, d = _canvas((140, 200, 245))
    d.rectangle([0, 196, 255, 255], fill=(70, 170, 70))  # grass
    d.ellipse([190, 18, 240, 68], fill=(255, 215, 0))  # sun
    d.rectangle([60, 120, 170, 200], fill=(240, 230, 200))  # walls
    d.polygon([(48, 122), (115, 66), (182, 122)], fill=(200, 30, 30))  # roof
    d.rectangle([100, 150, 130, 200], fill=(110, 70, 30))  # door
    d.rectangle([70, 135, 92, 157], fill=(170, 220, 250))  # window
    d.rectangle([140, 135, 162, 157], fill=(170, 220, 250))  # window
    return im


FRUIT_SALES = [("apples", 5), ("bananas", 3), ("cherries", 7)]


def draw_bar_chart() -> Image.Image:
    im, d = _canvas()
    font = ImageFont.load_default()
    d.text((60, 8), "Crates sold on Saturday", fill="black", font=font)
    d.line([(30, 220), (240, 220)], fill="black", width=2)
    d.line([(30, 30), (30, 220)], fill="black", width=2)
    colours = [(200, 40, 40), (240, 200, 40), (150, 20, 60)]
    for i, ((name, n), col) in enumerate(zip(FRUIT_SALES, colours)):
        x0 = 50 + i * 65
        d.rectangle([x0, 220 - n * 25, x0 + 45, 219], fill=col)
        d.text((x0 + 18, 220 - n * 25 - 14), str(n), fill="black", font=font)
        d.text((x0, 226), name, fill="black", font=font)
    return im


DRAWINGS = [
    (draw_triangle_square, "img-triangle-square", "Red triangle above a blue square",
     "A simple drawing of a red triangle directly above a blue square on a white background."),
    (draw_green_circles, "img-green-circles", "Three green circles",
     "Three green circles of the same size in a horizontal row on a yellow background."),
    (draw_circle_hexagon, "img-circle-hexagon", "Orange circle and purple hexagon",
     "An orange circle on the left and a purple hexagon on the right, on a light grey background."),
    (draw_house, "img-house", "Drawing of a house in the sun",
     "A child-like drawing of a cream-coloured house with a red roof, a brown door and two windows, on green "
     "grass under a blue sky with a yellow sun."),
    (draw_bar_chart, "img-bar-chart", "Bar chart of fruit crates sold",
     "Bar chart titled 'Crates sold on Saturday' with three bars: apples 5, bananas 3 and cherries 7; the "
     "cherries bar is the tallest."),
]

# --- passages and tables ----------------------------------------------------------------------------------

PASSAGES = [
    ("txt-eileen-collins", "Eileen Collins",
     "Eileen Collins is a retired NASA astronaut and United States Air Force colonel. In 1995, on mission STS-63, "
     "she became the first woman to pilot the Space Shuttle, and in 1999, on STS-93, the first woman to command "
     "a Space Shuttle mission."),
    ("txt-space-shuttle", "Space Shuttle",
     "The Space Shuttle was a partially reusable spacecraft operated by NASA from 1981 to 2011. It launched "
     "vertically like a rocket and landed on a runway like a glider."),
    ("txt-falcon-9", "Falcon 9",
     "Falcon 9 is a partially reusable two-stage rocket built by SpaceX. Its first stage is powered by nine "
     "Merlin engines and can land back on Earth to be flown again."),
    ("txt-launch-pad", "Launch pad",
     "A launch pad is the platform from which a rocket lifts off. Tall towers around the pad carry lightning "
     "rods, and floodlights light it up for launches at night."),
    ("txt-tabby", "Tabby cats",
     "Tabby is a coat pattern, not a breed: tabby cats have stripes, swirls or spots and a distinctive M-shaped "
     "marking on the forehead. Many tabbies have green, yellow or copper eyes."),
    ("txt-chelsea", "Chelsea (sample image)",
     "Chelsea is the name of the tabby cat in one of scikit-image's sample photographs, used in many image "
     "processing tutorials."),
    ("txt-espresso", "Espresso",
     "Espresso is coffee brewed by forcing hot water under pressure through finely ground coffee beans. It is "
     "served in a small cup and topped with a golden-brown foam called crema."),
    ("txt-tea", "Tea",
     "Tea is a drink made by pouring hot water over the cured leaves of the Camellia sinensis plant. After "
     "water, it is the most widely consumed drink in the world."),
    ("txt-deep-field", "Hubble eXtreme Deep Field",
     "The Hubble eXtreme Deep Field, released in 2012, combines ten years of Hubble Space Telescope photographs "
     "of a small patch of sky in the constellation Fornax. It shows about 5,500 galaxies, some of them seen as "
     "they were more than 13 billion years ago."),
    ("txt-coins", "Coin collecting",
     "Numismatics is the study and collection of coins. Ancient Greek and Roman coins were struck by hand "
     "between engraved dies, so no two are exactly alike."),
    ("txt-tripod", "Tripod",
     "A tripod is a three-legged stand that holds a camera steady, which allows long exposures without blur."),
    ("txt-horse", "Horse",
     "The horse is a large hoofed mammal domesticated about 6,000 years ago. Horses can sleep standing up by "
     "locking the joints of their legs."),
    ("txt-triangle", "Triangle",
     "A triangle is a polygon with three sides and three corners. The interior angles of any triangle add up "
     "to 180 degrees."),
    ("txt-hexagon", "Hexagon",
     "A hexagon is a polygon with six sides. Honeybees build their combs from hexagonal wax cells because "
     "hexagons tile a surface with the least wall for the area they enclose."),
    ("txt-circle", "Circle",
     "A circle is the set of points at the same distance, the radius, from a centre. Its circumference is pi "
     "times its diameter."),
    ("txt-galaxy", "Galaxy",
     "A galaxy is a huge system of stars, gas and dust held together by gravity. The Milky Way, our own galaxy, "
     "contains hundreds of billions of stars."),
    ("txt-silhouette", "Silhouette",
     "A silhouette is the image of a person, animal or object shown as a solid shape of a single colour, "
     "usually black, with no interior detail."),
    ("txt-square", "Square",
     "A square has four equal sides and four right angles. It is both a rectangle and a rhombus."),
    ("txt-primary-colours", "Primary colours",
     "In painting, red, yellow and blue are traditionally called the primary colours; mixing blue and red "
     "gives purple, and mixing red and yellow gives orange."),
    ("txt-saturday-market", "Riverside Saturday market",
     "The Riverside Saturday market is a small fruit market. Its stallholders count the crates of each fruit "
     "they sell and publish the totals every week."),
    ("txt-mars", "Mars",
     "Mars is the fourth planet from the Sun. It has two small moons, Phobos and Deimos, and its red colour "
     "comes from iron oxide dust on its surface."),
    ("txt-moon-landing", "Apollo 11",
     "Apollo 11 was the first crewed mission to land on the Moon. Neil Armstrong and Buzz Aldrin landed on "
     "20 July 1969 while Michael Collins stayed in lunar orbit."),
    ("txt-bicycle", "Bicycle",
     "A bicycle is a human-powered vehicle with two wheels, one behind the other, driven by pedals and a chain."),
    ("txt-photography", "Film photography",
     "Before digital sensors, cameras recorded images on light-sensitive film, which had to be developed "
     "chemically before the pictures could be seen."),
    ("txt-house-roofs", "Roof tiles",
     "Clay roof tiles are usually red or orange because the iron in the clay turns red when it is fired in "
     "a kiln."),
]

TABLES = [
    ("tab-fruit-sales", "Riverside Saturday market: crates sold",
     ["fruit", "crates sold", "price per crate (EUR)"],
     [["apples", "5", "12"], ["bananas", "3", "15"], ["cherries", "7", "30"]]),
    ("tab-inner-planets", "Inner planets of the Solar System",
     ["planet", "diameter (km)", "moons"],
     [["Mercury", "4,879", "0"], ["Venus", "12,104", "0"], ["Earth", "12,742", "1"], ["Mars", "6,779", "2"]]),
]

# --- questions (WebQA-like categories: color, shape, number, YesNo, choose, Others, text) -----------------

QUESTIONS = [
    ("demo-01", "What colour is the saucer under the cup of espresso?", ["red"], "color", ["img-coffee"], "red"),
    ("demo-02", "What colour is the triangle that sits above the blue square?", ["red"], "color",
     ["img-triangle-square"], "red"),
    ("demo-03", "What shape is next to the orange circle?", ["hexagon"], "shape", ["img-circle-hexagon"],
     "hexagon"),
    ("demo-04", "How many green circles are there on the yellow background?", ["3", "three"], "number",
     ["img-green-circles"], "3"),
    ("demo-05", "How many ancient coins are laid out on the dark cloth?", ["24", "twenty-four"], "number",
     ["img-coins"], "24"),
    ("demo-06", "Is astronaut Eileen Collins wearing an orange suit in her portrait?", ["Yes"], "YesNo",
     ["img-astronaut"], "yes"),
    ("demo-07", "Was the Falcon 9 on the launch pad photographed in daylight?", ["No, it was photographed at night."],
     "YesNo", ["img-rocket"], "no"),
    ("demo-08", "Are Chelsea the cat's eyes green or blue?", ["green"], "choose", ["img-cat"], "green"),
    ("demo-09", "What colour is the roof of the house in the drawing with the sun?", ["red"], "color",
     ["img-house"], "red"),
    ("demo-10", "What is the man in the black-and-white photograph on the lawn looking through?",
     ["a camera on a tripod"], "Others", ["img-cameraman"], "camera"),
    ("demo-11", "Which fruit sold the most crates at the Riverside Saturday market?", ["cherries"], "Others",
     ["tab-fruit-sales", "img-bar-chart"], "cherries"),
    ("demo-12", "Who was the first woman to pilot the Space Shuttle?", ["Eileen Collins"], "text",
     ["txt-eileen-collins"], ""),
    ("demo-13", "How many moons does Mars have?", ["2", "two"], "number", ["tab-inner-planets", "txt-mars"], "2"),
    ("demo-14", "About how many galaxies does the Hubble eXtreme Deep Field show?", ["about 5,500 galaxies"],
     "text", ["txt-deep-field"], ""),
]


def _save(im: Image.Image, path: Path, fmt: str) -> None:
    im = im.convert("RGB")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if fmt == "JPEG":
        im.save(path, "JPEG", quality=85, optimize=True)
    else:
        im.save(path, "PNG", optimize=True)


def _photo(name: str) -> Image.Image:
    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = np.where(a, 255, 0).astype(np.uint8)  # skimage's horse is False on the silhouette: keep it black
    return Image.fromarray(a)


def linearise(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([" | ".join(header), *(" | ".join(r) for r in rows)])


def build(out: Path) -> dict[str, int]:
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for old in img_dir.iterdir():
        old.unlink()
    corpus = []
    for name, cid, title, caption, licence in PHOTOS:
        rel = f"images/{cid[4:]}.jpg"
        _save(_photo(name), out / rel, "JPEG")
        corpus.append({"id": cid, "modality": "image", "title": title, "text": caption, "image_path": rel,
                       "source": licence})
    for fn, cid, title, caption in DRAWINGS:
        rel = f"images/{cid[4:]}.png"
        _save(fn(), out / rel, "PNG")
        corpus.append({"id": cid, "modality": "image", "title": title, "text": caption, "image_path": rel,
                       "source": DEMO_SOURCE})
    for cid, title, text in PASSAGES:
        corpus.append({"id": cid, "modality": "text", "title": title, "text": text, "source": DEMO_SOURCE})
    for cid, title, header, rows in TABLES:
        corpus.append({"id": cid, "modality": "table", "title": title, "text": linearise(header, rows),
                       "source": DEMO_SOURCE})
    ids = {c["id"] for c in corpus}
    assert len(ids) == len(corpus), "duplicate corpus id"
    questions = []
    for qid, q, answers, cat, gold, kw in QUESTIONS:
        missing = [g for g in gold if g not in ids]
        assert not missing, f"{qid}: gold ids not in the corpus: {missing}"
        questions.append({"qid": qid, "question": q, "answers": answers, "category": cat, "gold_ids": gold,
                          "dataset": "demo", "meta": {"keywords": kw} if kw else {}})
    (out / "corpus.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in corpus),
                                      encoding="utf-8")
    (out / "questions.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
                                         encoding="utf-8")
    return {"candidates": len(corpus), "images": len(PHOTOS) + len(DRAWINGS), "questions": len(questions)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    counts = build(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(json.dumps({**counts, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
