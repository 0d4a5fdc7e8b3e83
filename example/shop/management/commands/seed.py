"""Fill the shop with deterministic data: same command, same rows, every time."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from shop.models import Category, Product, Review, Tag

CATEGORIES = "Books Music Garden Kitchen Toys Sports Office Outdoors Lighting Tools".split()
ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Handmade", "Pro", "Smart", "Vintage"]
NOUNS = ["Lamp", "Kettle", "Notebook", "Shovel", "Speaker", "Puzzle", "Racket", "Chair"]
REVIEW_BODIES = [
    "Does what it says.",
    "Arrived quickly, works well.",
    "Better than expected for the price.",
    "Broke after a week.",
    "Would buy again.",
    "Fine, nothing special.",
]


class Command(BaseCommand):
    help = "Create deterministic demo data for the shop (skipped if data exists)."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Delete all shop data first.")
        parser.add_argument("--products", type=int, default=2000)
        parser.add_argument("--reviews", type=int, default=5000)

    def handle(self, *args, reset, products, reviews, **options):
        if reset:
            with transaction.atomic():
                # Reviews and the m2m rows go with the products (CASCADE).
                Product.objects.all().delete()
                Category.objects.all().delete()
                Tag.objects.all().delete()
        elif Product.objects.nocache().exists():
            self.stdout.write("Shop data already present; use --reset to recreate it.")
            return

        rng = random.Random(20240601)
        with transaction.atomic():
            categories = Category.objects.bulk_create(
                Category(name=name, slug=name.lower()) for name in CATEGORIES
            )
            tags = Tag.objects.bulk_create(Tag(name=f"tag-{i:02d}") for i in range(30))
            start = datetime(2024, 1, 1, tzinfo=UTC)
            new_products = Product.objects.bulk_create(
                (
                    Product(
                        category=categories[i % len(categories)],
                        name=f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} #{i + 1}",
                        price=Decimal(rng.randrange(199, 49999)) / 100,
                        in_stock=rng.random() < 0.8,
                        created=start + timedelta(minutes=37 * i),
                    )
                    for i in range(products)
                ),
                batch_size=500,
            )
            Through = Product.tags.through
            Through.objects.bulk_create(
                (
                    Through(product_id=product.pk, tag_id=tag.pk)
                    for product in new_products
                    for tag in rng.sample(tags, 3)
                ),
                batch_size=1000,
            )
            Review.objects.bulk_create(
                (
                    Review(
                        product=rng.choice(new_products),
                        rating=rng.choice([1, 2, 3, 4, 4, 5, 5, 5]),
                        body=rng.choice(REVIEW_BODIES),
                    )
                    for _ in range(reviews)
                ),
                batch_size=1000,
            )
        self.stdout.write(
            f"Seeded {len(categories)} categories, {len(new_products)} products, "
            f"{len(tags)} tags, {Through.objects.nocache().count()} product tags, "
            f"{reviews} reviews."
        )
