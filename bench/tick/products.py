"""Realistic `product.optimize` payloads for bench/tick: what an online store sends for one product (Shopify-like
fields: title, HTML description, vendor, type, tags, options, variants), built from a seed so every run enqueues
the same backlog. The product as JSON is 0.5-2.5 KB (median about 1.3 KB: a description of 2-6 short paragraphs,
1-6 variants); each store has its own language and a line of tone instructions.

Request size matters to the figures: OpenAI counts a request's input from its characters (about 4 per token). With
the system prompt and the response schema a request body here is about 3 KB, ~770 input tokens by that rule, so
450 requests/min need 450 x max(output cap sent, ~770) tokens/min: 350K with a cap near the answers' size, 1.8M
with today's 4096 (a 500K account then serves ~120/min). `describe()` prints the sizes of the backlog enqueued.
"""
from __future__ import annotations

import json
import random
import statistics

LANGUAGES = ["en", "de", "fr", "nl", "es", "it", "en", "en", "de", "sv"]
TONES = [
    "Friendly, upbeat tone; mention free shipping over 50 EUR.",
    "Premium, understated tone. Avoid exclamation marks. Emphasise craftsmanship and materials.",
    "Short sentences, practical benefits first; our customers are busy parents.",
    "Keep brand names exactly as written. Use British English spelling.",
    "Technical and precise: dimensions, materials and care instructions matter most to our buyers.",
    "Warm and personal, as if the shop owner wrote it. Mention that every order is packed by hand.",
]
KINDS = {
    "Shirt": (["Linen", "Cotton", "Oxford", "Flannel", "Chambray"], ["Size", "Colour"],
              [["S", "M", "L", "XL"], ["White", "Navy", "Sage", "Sand"]]),
    "Mug": (["Stoneware", "Enamel", "Porcelain", "Speckled"], ["Colour"], [["Cream", "Charcoal", "Blue"]]),
    "Backpack": (["Waxed canvas", "Recycled nylon", "Leather", "Roll-top"], ["Colour"],
                 [["Black", "Olive", "Tan"]]),
    "Candle": (["Soy", "Beeswax", "Scented", "Travel"], ["Scent"], [["Cedar", "Fig", "Lavender", "Amber"]]),
    "Sneaker": (["Running", "Canvas", "Trail", "Court"], ["Size"], [["38", "39", "40", "41", "42", "43", "44"]]),
    "Lamp": (["Desk", "Brass", "Ceramic", "Clip-on"], ["Finish"], [["Black", "Brass", "White"]]),
    "Tea": (["Sencha", "Earl Grey", "Rooibos", "Chai"], ["Weight"], [["50 g", "100 g", "250 g"]]),
    "Cutting board": (["Oak", "Walnut", "Olive wood", "Bamboo"], ["Size"], [["Small", "Medium", "Large"]]),
}
SENTENCES = [
    "Made from {material} that gets softer with every wash.",
    "Designed in our studio and produced in small batches by a family-run workshop.",
    "The {kind} is finished by hand, so every piece is slightly different.",
    "It pairs well with the rest of our {collection} collection.",
    "Care: machine wash cold, dry flat, do not bleach.",
    "Dimensions are listed in the size guide; if in doubt, order one size up.",
    "Every order ships in plastic-free packaging within two working days.",
    "A reliable everyday {kind} that still looks good after years of use.",
    "We tested it for six months before adding it to the shop.",
    "The colour may vary slightly from the photos depending on your screen.",
    "Customers use it at home, in the office and when travelling.",
    "Returns are free within 30 days, no questions asked.",
    "Lightweight, durable and easy to clean with a damp cloth.",
    "Sustainably sourced {material}, certified by the supplier.",
]
VENDORS = ["Northwind Goods", "Atelier Maren", "Fjord & Field", "Casa Lumen", "Oak Hollow", "Brightside Supply"]


def _description(rng: random.Random, kind: str, material: str) -> str:
    paragraphs = []
    for _ in range(rng.randint(2, 6)):
        picked = rng.sample(SENTENCES, rng.randint(2, 4))
        text = " ".join(s.format(kind=kind.lower(), material=material.lower(),
                                 collection=rng.choice(["Essentials", "Studio", "Harbour", "Meadow"]))
                        for s in picked)
        paragraphs.append(f"<p>{text}</p>")
    if rng.random() < 0.5:
        items = "".join(f"<li>{s.format(kind=kind.lower(), material=material.lower(), collection='Studio')}</li>"
                        for s in rng.sample(SENTENCES, 3))
        paragraphs.append(f"<ul>{items}</ul>")
    return "".join(paragraphs)


def product(rng: random.Random, n: int) -> dict:
    kind = rng.choice(sorted(KINDS))
    materials, option_names, option_values = KINDS[kind]
    material = rng.choice(materials)
    options = [{"name": name, "values": rng.sample(values, rng.randint(1, len(values)))}
               for name, values in zip(option_names, option_values)]
    combos = [[v] for v in options[0]["values"]]
    for option in options[1:]:
        combos = [c + [v] for c in combos for v in option["values"]]
    price = round(rng.uniform(9, 180), 2)
    variants = [{"sku": f"{kind[:3].upper()}-{n:06d}-{i:02d}", "title": " / ".join(combo), "price": f"{price:.2f}",
                 "inventory_quantity": rng.randint(0, 120)} for i, combo in enumerate(combos[:rng.randint(1, 6)])]
    return {
        "title": f"{material} {kind} {rng.choice(['Classic', 'No. ' + str(rng.randint(1, 99)), 'Everyday', 'Pro'])}",
        "body_html": _description(rng, kind, material),
        "vendor": rng.choice(VENDORS),
        "product_type": kind,
        "tags": rng.sample(["new", "bestseller", "gift", "sale", "eco", "handmade", "summer", "winter", "limited",
                            "bundle", "staff-pick"], rng.randint(2, 6)),
        "options": options,
        "variants": variants,
    }


def store_payloads(store_index: int) -> tuple[str, dict]:
    """(language, instructions) a store sends with every job."""
    rng = random.Random(f"store-{store_index}")
    return LANGUAGES[store_index % len(LANGUAGES)], {"instructions": rng.choice(TONES)}


def backlog(n_jobs: int, n_stores: int, *, seed: int = 10, skew: float = 0.0) -> list[dict]:
    """`n_jobs` POST /jobs items from `n_stores` stores, each store's catalogue enqueued as one block (as a store
    importing its catalogue does). skew 0: equal shares; skew s > 0: store i's share ~ 1/(i+1)^s."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** skew for i in range(n_stores)]
    total = sum(weights)
    counts = [int(n_jobs * w / total) for w in weights]
    for i in range(n_jobs - sum(counts)):
        counts[i % n_stores] += 1
    jobs, n = [], 0
    for store, count in enumerate(counts):
        language, extra = store_payloads(store)
        for _ in range(count):
            jobs.append({"type": "product.optimize", "store_id": f"store-{store:03d}",
                         "payload": {"product": product(rng, n), "language": language, **extra}})
            n += 1
    return jobs


def describe(jobs: list[dict]) -> str:
    sizes = [len(json.dumps(j["payload"]["product"], ensure_ascii=False)) for j in jobs]
    if not sizes:
        return "no jobs"
    stores = len({j["store_id"] for j in jobs})
    return (f"{len(jobs):,} product.optimize jobs from {stores} stores; product JSON median "
            f"{statistics.median(sizes):,.0f} chars (min {min(sizes):,}, max {max(sizes):,})")
