"""The fixed world knowledge of the synthetic e-commerce world.

A category tree (level 1 -> level 2 -> level-3 product entities), vocabularies for the 18
attribute types of the OneSearch paper, synonyms, ambiguous short queries whose right products
depend on the searcher, and complex intents that name several concrete entities. The generator
in :mod:`onesearch_jax.data.world` draws everything random (brands, items, users, behaviour) on
top of this; the ontology part is also written out as the lexicon a language model would bring.
"""

from __future__ import annotations

# The 18 types are the data format's vocabulary (schema.py); re-exported for the world generator.
from onesearch_jax.data.schema import ATTRIBUTE_TYPES as ATTRIBUTE_TYPES

# level 1 -> level 2 -> level-3 entities, each with a typical price in currency units.
TAXONOMY: dict[str, dict[str, dict[str, float]]] = {
    "Sports & Outdoors": {
        "Fitness Equipment": {"treadmill": 450, "dumbbells": 40, "yoga mat": 25, "exercise bike": 300,
                              "resistance bands": 15, "kettlebell": 35},
        "Camping": {"tent": 120, "sleeping bag": 60, "camping lantern": 20, "camping stove": 45},
        "Sports Shoes": {"running shoes": 80, "hiking boots": 110, "basketball shoes": 95},
    },
    "Home & Kitchen": {
        "Cookware": {"frying pan": 35, "rice cooker": 70, "electric kettle": 30, "knife set": 55},
        "Furniture": {"sofa": 600, "office chair": 150, "desk": 180, "bookshelf": 90},
        "Bedding": {"duvet": 80, "pillow": 25, "bed sheet": 30},
    },
    "Women's Clothing": {
        "Dresses & Skirts": {"dress": 45, "skirt": 30},
        "Women's Tops": {"blouse": 28, "t-shirt": 15, "sweater": 40},
        "Women's Outerwear": {"down jacket": 120, "wool coat": 150},
    },
    "Men's Clothing": {
        "Men's Tops": {"t-shirt": 15, "shirt": 30, "hoodie": 35},
        "Pants": {"jeans": 45, "chinos": 40, "shorts": 20},
        "Men's Outerwear": {"down jacket": 130, "windbreaker": 60},
    },
    "Shoes & Bags": {
        "Women's Shoes": {"high heels": 55, "canvas shoes": 30, "ankle boots": 70},
        "Bags & Luggage": {"backpack": 40, "handbag": 65, "suitcase": 110},
    },
    "Electronics": {
        "Phones & Accessories": {"smartphone": 500, "phone case": 10, "power bank": 25, "earbuds": 60},
        "Computers": {"laptop": 900, "monitor": 220, "keyboard": 50, "mouse": 20},
        "Smart Home": {"smart speaker": 60, "robot vacuum": 280, "security camera": 45},
    },
    "Beauty": {
        "Skincare": {"moisturizer": 25, "sunscreen": 15, "facial mask": 12, "serum": 35},
        "Makeup": {"lipstick": 20, "foundation": 30, "eyeshadow palette": 28},
    },
    "Baby & Kids": {
        "Feeding": {"baby bottle": 15, "high chair": 70},
        "Toys": {"building blocks": 30, "plush toy": 18, "toy car": 22},
        "Baby Care": {"diapers": 28, "baby wipes": 8},
    },
    "Pet Supplies": {
        "Dog Supplies": {"dog food": 40, "dog leash": 12, "dog bed": 35},
        "Cat Supplies": {"cat litter": 18, "cat tree": 75, "cat food": 30},
    },
}  # fmt: skip

# Level-1 category -> attribute vocabularies that only make sense there.
CATEGORY_ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "Sports & Outdoors": {
        "material": ("steel", "rubber", "foam", "nylon", "carbon fiber", "mesh"),
        "function": ("foldable", "adjustable", "non-slip", "quick-dry", "waterproof", "shock-absorbing"),
        "specifications": ("5kg", "10kg", "20kg", "6mm", "10mm", "2-person"),
    },
    "Home & Kitchen": {
        "material": ("stainless steel", "cast iron", "ceramic", "solid wood", "memory foam", "bamboo"),
        "function": ("non-stick", "dishwasher-safe", "ergonomic", "anti-mite", "induction-ready", "storage"),
        "specifications": ("24cm", "28cm", "1.5L", "3L", "queen size", "king size"),
    },
    "Women's Clothing": {
        "material": ("cotton", "linen", "silk", "wool", "polyester", "cashmere"),
        "function": ("breathable", "warm", "slimming", "quick-dry", "wrinkle-free"),
        "specifications": ("size s", "size m", "size l", "plus size"),
    },
    "Men's Clothing": {
        "material": ("cotton", "linen", "wool", "polyester", "denim", "fleece"),
        "function": ("breathable", "warm", "stretch", "quick-dry", "wrinkle-free"),
        "specifications": ("size m", "size l", "size xl", "plus size"),
    },
    "Shoes & Bags": {
        "material": ("leather", "canvas", "suede", "nylon", "pu leather"),
        "function": ("waterproof", "anti-theft", "lightweight sole", "expandable", "non-slip"),
        "specifications": ("size 37", "size 39", "20 inch", "24 inch", "15.6 inch"),
    },
    "Electronics": {
        "material": ("aluminum", "plastic", "tempered glass", "silicone"),
        "function": ("wireless", "fast charging", "noise cancelling", "bluetooth", "4k", "voice control"),
        "specifications": ("128gb", "256gb", "10000mah", "27 inch", "16gb ram"),
    },
    "Beauty": {
        "material": ("hyaluronic acid", "vitamin c", "aloe", "retinol", "niacinamide"),
        "function": ("hydrating", "brightening", "anti-aging", "oil control", "spf50", "long-lasting"),
        "specifications": ("30ml", "50ml", "100ml", "set of 10"),
    },
    "Baby & Kids": {
        "material": ("silicone", "organic cotton", "bpa-free plastic", "wood"),
        "function": ("anti-colic", "educational", "hypoallergenic", "leak-proof", "washable"),
        "specifications": ("240ml", "size m", "100 pieces", "3+ years"),
    },
    "Pet Supplies": {
        "material": ("rubber", "plush", "nylon", "natural grain", "tofu"),
        "function": ("odor control", "chew-proof", "grain-free", "reflective", "washable"),
        "specifications": ("2kg", "10kg", "size l", "6l"),
    },
}  # fmt: skip

# Attribute vocabularies shared by every category.
GLOBAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": ("black", "white", "red", "blue", "pink", "grey", "green", "beige", "navy", "purple"),
    "style": ("minimalist", "vintage", "korean style", "sporty", "business", "cute", "luxury", "streetwear"),
    "season": ("spring", "summer", "autumn", "winter", "all-season"),
    "pattern": ("striped", "plaid", "floral", "solid", "polka dot", "camouflage"),
    "scene": ("home gym", "office", "outdoor", "travel", "party", "commute", "bedroom", "kitchen", "gift"),
    "location": ("italian", "japanese", "korean", "german", "french", "yunnan", "xinjiang"),
    "modifier": ("lightweight", "portable", "premium", "mini", "large", "thick", "slim fit", "oversized",
                 "professional", "2-in-1"),
    "price": ("budget", "affordable", "mid-range", "high-end"),
    "anchor": ("lily live", "xiaomei live", "tony live", "coco live", "brother wang live"),
    "series": ("classic series", "pro series", "air series", "ultra series", "lite series"),
    "marketing": ("new arrival", "hot sale", "limited edition", "free shipping", "flash deal",
                  "official store"),
}  # fmt: skip
AUDIENCES: tuple[str, ...] = ("women", "men", "kids", "elderly", "students", "beginners")
# Level-1 categories whose items are made for one audience.
CATEGORY_AUDIENCE: dict[str, str] = {"Women's Clothing": "women", "Men's Clothing": "men"}
PRICE_BAND_FACTORS: tuple[float, ...] = (0.55, 0.85, 1.3, 2.4)

# Other names people search with for an entity (the "synonym variant" queries).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sofa": ("couch", "settee"),
    "running shoes": ("sneakers", "trainers", "jogging shoes"),
    "smartphone": ("cellphone", "mobile phone"),
    "laptop": ("notebook computer",),
    "earbuds": ("wireless earphones", "in-ear headphones"),
    "power bank": ("portable charger",),
    "treadmill": ("running machine",),
    "dumbbells": ("hand weights",),
    "suitcase": ("luggage", "trolley case"),
    "duvet": ("comforter", "quilt"),
    "diapers": ("nappies",),
    "cat litter": ("kitty litter",),
    "hoodie": ("sweatshirt",),
    "facial mask": ("sheet mask",),
    "robot vacuum": ("sweeping robot",),
    "electric kettle": ("water boiler",),
}

# Short queries whose right entities depend on who searches ("t-shirt" means different
# products for women and men). Keys of each mapping are genders as in users.jsonl.
AMBIGUOUS_QUERIES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "t-shirt": {"F": (("Women's Clothing", "t-shirt"),), "M": (("Men's Clothing", "t-shirt"),)},
    "down jacket": {"F": (("Women's Clothing", "down jacket"),), "M": (("Men's Clothing", "down jacket"),)},
    "shoes": {
        "F": (("Shoes & Bags", "high heels"), ("Shoes & Bags", "canvas shoes"), ("Shoes & Bags", "ankle boots")),
        "M": (("Sports & Outdoors", "running shoes"), ("Sports & Outdoors", "hiking boots"),
              ("Sports & Outdoors", "basketball shoes")),
    },
    "jacket": {
        "F": (("Women's Clothing", "down jacket"), ("Women's Clothing", "wool coat")),
        "M": (("Men's Clothing", "down jacket"), ("Men's Clothing", "windbreaker")),
    },
    "tops": {
        "F": (("Women's Clothing", "blouse"), ("Women's Clothing", "t-shirt"), ("Women's Clothing", "sweater")),
        "M": (("Men's Clothing", "t-shirt"), ("Men's Clothing", "shirt"), ("Men's Clothing", "hoodie")),
    },
    "bag": {
        "F": (("Shoes & Bags", "handbag"),),
        "M": (("Shoes & Bags", "backpack"), ("Shoes & Bags", "suitcase")),
    },
    "gift for mom": {
        "F": (("Beauty", "serum"), ("Beauty", "moisturizer"), ("Shoes & Bags", "handbag")),
        "M": (("Beauty", "serum"), ("Beauty", "lipstick"), ("Home & Kitchen", "pillow")),
    },
    "summer clothes": {
        "F": (("Women's Clothing", "dress"), ("Women's Clothing", "skirt"), ("Women's Clothing", "t-shirt")),
        "M": (("Men's Clothing", "t-shirt"), ("Men's Clothing", "shorts")),
    },
}  # fmt: skip

# Complex intents: a need that names no product but implies several (with implied attributes).
COMPLEX_INTENTS: dict[str, tuple[tuple[tuple[str, str], ...], dict[str, tuple[str, ...]]]] = {
    "indoor fitness equipment": (
        (("Sports & Outdoors", "treadmill"), ("Sports & Outdoors", "dumbbells"), ("Sports & Outdoors", "yoga mat"),
         ("Sports & Outdoors", "exercise bike"), ("Sports & Outdoors", "kettlebell")),
        {"scene": ("home gym",)},
    ),
    "camping gear": (
        (("Sports & Outdoors", "tent"), ("Sports & Outdoors", "sleeping bag"),
         ("Sports & Outdoors", "camping lantern"), ("Sports & Outdoors", "camping stove")),
        {"scene": ("outdoor",)},
    ),
    "home office setup": (
        (("Home & Kitchen", "desk"), ("Home & Kitchen", "office chair"), ("Electronics", "monitor"),
         ("Electronics", "keyboard"), ("Electronics", "mouse")),
        {"scene": ("office",), "function": ("ergonomic",)},
    ),
    "newborn essentials": (
        (("Baby & Kids", "baby bottle"), ("Baby & Kids", "diapers"), ("Baby & Kids", "baby wipes")),
        {"function": ("hypoallergenic",)},
    ),
    "new puppy supplies": (
        (("Pet Supplies", "dog food"), ("Pet Supplies", "dog leash"), ("Pet Supplies", "dog bed")),
        {},
    ),
    "kitchen starter kit": (
        (("Home & Kitchen", "frying pan"), ("Home & Kitchen", "rice cooker"), ("Home & Kitchen", "knife set"),
         ("Home & Kitchen", "electric kettle")),
        {"scene": ("kitchen",)},
    ),
    "skincare routine": (
        (("Beauty", "moisturizer"), ("Beauty", "sunscreen"), ("Beauty", "serum"), ("Beauty", "facial mask")),
        {"function": ("hydrating",)},
    ),
    "business trip essentials": (
        (("Shoes & Bags", "suitcase"), ("Electronics", "power bank"), ("Electronics", "earbuds"),
         ("Men's Clothing", "shirt")),
        {"scene": ("travel",)},
    ),
    "smart home gadgets": (
        (("Electronics", "smart speaker"), ("Electronics", "robot vacuum"), ("Electronics", "security camera")),
        {"function": ("voice control",)},
    ),
    "gaming setup": (
        (("Electronics", "monitor"), ("Electronics", "keyboard"), ("Electronics", "mouse"),
         ("Electronics", "earbuds")),
        {},
    ),
    "new cat owner kit": (
        (("Pet Supplies", "cat litter"), ("Pet Supplies", "cat tree"), ("Pet Supplies", "cat food")),
        {},
    ),
    "cozy bedroom": (
        (("Home & Kitchen", "duvet"), ("Home & Kitchen", "pillow"), ("Home & Kitchen", "bed sheet")),
        {"scene": ("bedroom",)},
    ),
    "toys for toddlers": (
        (("Baby & Kids", "building blocks"), ("Baby & Kids", "plush toy"), ("Baby & Kids", "toy car")),
        {"function": ("educational",)},
    ),
}  # fmt: skip

PROVINCES: tuple[tuple[str, str], ...] = (
    ("Guangdong", "Guangzhou"), ("Guangdong", "Shenzhen"), ("Zhejiang", "Hangzhou"), ("Jiangsu", "Nanjing"),
    ("Sichuan", "Chengdu"), ("Beijing", "Beijing"), ("Shanghai", "Shanghai"), ("Hubei", "Wuhan"),
    ("Liaoning", "Anshan"), ("Shandong", "Qingdao"), ("Henan", "Zhengzhou"), ("Yunnan", "Kunming"),
)  # fmt: skip
AGE_BUCKETS: tuple[str, ...] = ("0-11", "12-17", "18-23", "24-30", "31-40", "41-49", "50+")
AGE_WEIGHTS: tuple[float, ...] = (0.01, 0.08, 0.17, 0.22, 0.26, 0.15, 0.11)
BRAND_SYLLABLES: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("Ka", "Lo", "Vi", "Ze", "Mo", "Ri", "Su", "Ta", "Ne", "Po", "Fa", "Qu", "Xi", "Ly", "Do", "Be", "Ha", "Jo"),
    ("ra", "vo", "nix", "lia", "tek", "mo", "sa", "ro", "ven", "zu", "ka", "li", "dor", "per", "lux", "na"),
)  # fmt: skip
SHOP_WORDS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("Happy", "Sunny", "Golden", "Lucky", "Urban", "Green", "Star", "Maple", "Ocean", "Cozy", "Bright", "Royal"),
    ("Home", "Mart", "Goods", "Corner", "Outlet", "Select", "House", "Depot", "Bazaar", "Store"),
)  # fmt: skip
NO_BRAND = "no brand"
TITLE_FILLERS: tuple[str, ...] = ("2025", "genuine", "hot", "new", "quality", "best seller", "cheap")
NEGATION_WORDS: tuple[str, ...] = ("not", "without", "no")
