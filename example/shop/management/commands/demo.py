"""Time a realistic query mix with and without querystash, then show invalidation.

Every number printed is measured: times with ``time.perf_counter`` (medians,
uncached and cached runs interleaved), hits and misses read from
``querystash.stats()`` around each run. The command exits non-zero unless it
saw at least one cache hit and one write whose invalidation made the next read
fresh, so a broken cache cannot print a happy demo.

It runs on the built-in store only (``QUERYSTASH["STORAGE"] = "django"`` in the
settings: Django's local-memory cache, inside this process) and refuses to
start on any other, so it never writes into a server it was not given, such as
a redis that happens to listen on 127.0.0.1:6379.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import entry_points

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Avg, Count, Prefetch
from django.test.utils import override_settings

import querystash
from shop.models import Category, Product, Review, Tag


@dataclass
class Query:
    name: str
    models: tuple[str, ...]  # the labels whose counters this query moves
    run: Callable[[bool], object]  # run(cached) -> plain, comparable data


def counters(labels):
    """``(hits, misses)`` per label in ``labels``, as querystash counted them."""
    stats = querystash.stats()
    return {
        label: (stats.get(label, {}).get("hits", 0), stats.get(label, {}).get("misses", 0))
        for label in labels
    }


def moved(before, after):
    """Hits and misses counted between two ``counters()`` snapshots, per label."""
    return {
        label: (after[label][0] - before[label][0], after[label][1] - before[label][1])
        for label in before
    }


def invalidation_count():
    return sum(counts.get("invalidations", 0) for counts in querystash.stats().values())


def outcome(before, after):
    """'hit', 'miss' or 'uncounted', from the counters around one read."""
    counted = moved(before, after).values()
    hits, misses = sum(c[0] for c in counted), sum(c[1] for c in counted)
    if misses:
        return "miss"
    if hits:
        return "hit"
    return "uncounted"


def add_up(counted, before, after):
    """Add what moved between two ``counters()`` snapshots into ``counted``."""
    for label, (hits, misses) in moved(before, after).items():
        counted[label] = (counted[label][0] + hits, counted[label][1] + misses)


def ms(seconds):
    return f"{seconds * 1000:.3f}"


class Command(BaseCommand):
    help = "Benchmark cached vs uncached shop queries and demonstrate invalidation."

    def add_arguments(self, parser):
        parser.add_argument(
            "--repeat", type=int, default=50, help="Timed runs per query and mode (default 50)."
        )

    def handle(self, *args, repeat, **options):
        if repeat < 2:
            raise CommandError("--repeat must be at least 2.")
        started = time.perf_counter()
        self.say_where()
        if not Product.objects.nocache().exists():
            self.stdout.write("No shop data yet: seeding.")
            call_command("seed", stdout=self.stdout)

        products = Product.objects.nocache().order_by("pk")
        self.product = products[products.count() // 2]
        self.category = self.product.category
        querystash.reset_stats()

        self.stdout.write(
            f"\nQuery mix: {repeat} uncached runs (.nocache()) interleaved with {repeat} cached "
            "runs; times are medians in ms.\n"
        )
        # DEBUG=True (runserver's setting here) logs every SQL statement a
        # cursor runs: a cost only uncached reads pay. Time without it.
        with override_settings(DEBUG=False):
            total_hits, problems = self.benchmark(repeat)
        fresh, more_problems = self.invalidation()
        problems += more_problems
        self.print_stats()

        stats = querystash.stats()
        hits = sum(c.get("hits", 0) for c in stats.values())
        misses = sum(c.get("misses", 0) for c in stats.values())
        invalidations = invalidation_count()
        elapsed = time.perf_counter() - started
        if not total_hits:
            problems.append("no cached read was ever a hit")
        if not fresh:
            problems.append("no write was seen to invalidate a cached read")
        if problems:
            for problem in dict.fromkeys(problems):  # each distinct problem once
                self.stderr.write(f"PROBLEM: {problem}")
            raise CommandError(
                f"demo FAILED: {hits} hits, {misses} misses, {invalidations} invalidations"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"demo OK: {hits} hits, {misses} misses, {invalidations} invalidations "
                f"({elapsed:.1f} s)"
            )
        )

    def say_where(self):
        """Print the database and the store this run uses; refuse any store
        but the built-in one (see the module docstring)."""
        # querystash has no public accessor for the active store yet; the
        # runtime is what ``manage.py querystash stats`` reports from.
        from querystash import _runtime

        rt = _runtime.current
        storage = rt.storage if rt is not None else None
        name = storage.name if storage is not None else None
        if name != "django" or not rt.enabled:
            problems = "; ".join(rt.problems) if rt is not None else "querystash is not installed"
            raise CommandError(
                f"the demo runs on querystash's built-in store only, but the active store is "
                f"{name!r} (caching {'on' if rt is not None and rt.enabled else 'off'}"
                f"{': ' + problems if problems else ''}). "
                'Set QUERYSTASH["STORAGE"] = "django" in example_project/settings.py.'
            )
        backend = settings.CACHES[storage.alias]["BACKEND"].rsplit(".", 1)[-1]
        plugins = sorted(ep.name for ep in entry_points(group="querystash"))
        self.stdout.write(
            f"database: {connection.vendor} ({connection.settings_dict['NAME']})\n"
            f"store:    querystash's built-in store, Django's cache {storage.alias!r} "
            f"({backend}, inside this process), chosen by "
            f"QUERYSTASH[\"STORAGE\"] = {rt.config['STORAGE']!r}\n"
            f"plugins:  {', '.join(plugins) or '(none)'} installed; no other store is used"
        )

    # -- the query mix --------------------------------------------------------

    def queries(self):
        product, category = self.product, self.category

        def products(cached):
            return Product.objects.all() if cached else Product.objects.nocache()

        def reviews(cached):
            return Review.objects.all() if cached else Review.objects.nocache()

        def get_by_pk(cached):
            p = products(cached).get(pk=product.pk)
            return (p.pk, p.name, p.price, p.in_stock)

        def latest_in_category(cached):
            qs = products(cached).filter(category=category, in_stock=True).order_by("-created")
            return [(p.pk, p.name, p.price) for p in qs[:20]]

        def reviews_with_product(cached):
            qs = reviews(cached).select_related("product__category").filter(rating=5)
            return [
                (r.pk, r.product.name, r.product.price, r.product.category.name)
                for r in qs.order_by("-pk")[:100]
            ]

        def count_in_stock(cached):
            return products(cached).filter(in_stock=True).count()

        def exists_bad_review(cached):
            return reviews(cached).filter(product__category=category, rating=1).exists()

        def average_rating(cached):
            return reviews(cached).filter(product__category=category).aggregate(avg=Avg("rating"))

        def products_with_tags(cached):
            tags = Tag.objects.all() if cached else Tag.objects.nocache()
            qs = products(cached).order_by("pk").prefetch_related(Prefetch("tags", tags))
            return [(p.pk, [t.name for t in p.tags.all()]) for p in qs[:20]]

        def top_rated(cached):
            qs = (
                products(cached)
                .annotate(avg=Avg("reviews__rating"), n=Count("reviews"))
                .filter(n__gte=3)
                .order_by("-avg", "-n", "pk")
            )
            return [(p.pk, p.name, p.avg, p.n) for p in qs[:10]]

        def price_list(cached):
            qs = products(cached).filter(category=category).order_by("pk")
            return list(qs.values_list("pk", "name", "price"))

        def category_list(cached):
            qs = Category.objects.all() if cached else Category.objects.nocache()
            return [(c.pk, c.name) for c in qs]

        def categories(cached):
            return Category.objects.all() if cached else Category.objects.nocache()

        def category_report(cached):
            # joins every product and review: 5,000 rows grouped into 10
            qs = categories(cached).annotate(
                reviews=Count("products__reviews"), avg=Avg("products__reviews__rating")
            )
            return [(c.name, c.reviews, c.avg) for c in qs.order_by("name")]

        def rating_histogram(cached):
            qs = reviews(cached).values("rating").annotate(n=Count("id")).order_by("rating")
            return list(qs)

        def popular_tags(cached):
            tags = Tag.objects.all() if cached else Tag.objects.nocache()
            qs = tags.annotate(n=Count("products")).order_by("-n", "name")[:10]
            return [(t.name, t.n) for t in qs]

        return [
            Query("get by pk", ("shop.Product",), get_by_pk),
            Query("filter, 20 rows, ordered", ("shop.Product",), latest_in_category),
            Query("select_related, 100 rows", ("shop.Review",), reviews_with_product),
            Query("count", ("shop.Product",), count_in_stock),
            Query("exists", ("shop.Review",), exists_bad_review),
            Query("aggregate Avg(rating)", ("shop.Review",), average_rating),
            Query("prefetch tags, 20 products", ("shop.Product", "shop.Tag"), products_with_tags),
            Query("annotate, top 10 rated", ("shop.Product",), top_rated),
            Query("values_list, 200 rows", ("shop.Product",), price_list),
            Query("category list", ("shop.Category",), category_list),
            Query("group by rating, 5,000 rows", ("shop.Review",), rating_histogram),
            Query("tags by product count (m2m)", ("shop.Tag",), popular_tags),
            Query("join 3 tables, group by", ("shop.Category",), category_report),
        ]

    def benchmark(self, repeat):
        header = ("query", "uncached", "fill run", "cached hit", "speed-up", "hits", "misses")
        rows = [header]
        notes = []
        total_hits = 0
        problems = []
        ratios = []  # (query, uncached median / hit median)
        for query in self.queries():
            uncached, hit_times = [], []
            counted = dict.fromkeys(query.models, (0, 0))
            # The first cached run fills the cache (a miss): timed, but not in the median.
            before = counters(query.models)
            t0 = time.perf_counter()
            query.run(True)
            first = time.perf_counter() - t0
            add_up(counted, before, counters(query.models))
            expected = query.run(False)
            for i in range(repeat):
                # Alternate the order (A/B, B/A, ...) so neither mode always runs second.
                for cached in (False, True) if i % 2 == 0 else (True, False):
                    before = counters(query.models)
                    t0 = time.perf_counter()
                    result = query.run(cached)
                    elapsed = time.perf_counter() - t0
                    after = counters(query.models)
                    if cached:
                        hit_times.append(elapsed)
                        add_up(counted, before, after)
                    else:
                        uncached.append(elapsed)
                        if after != before:
                            problems.append(f"{query.name}: a .nocache() run moved the counters")
                    if result != expected:
                        mode = "cached" if cached else "uncached"
                        problems.append(f"{query.name}: a {mode} run returned different rows")
            hits = sum(c[0] for c in counted.values())
            misses = sum(c[1] for c in counted.values())
            total_hits += hits
            median_uncached = statistics.median(uncached)
            median_hit = statistics.median(hit_times)
            ratio = median_uncached / median_hit
            ratios.append((query.name, ratio))
            rows.append(
                (
                    query.name,
                    ms(median_uncached),
                    ms(first),
                    ms(median_hit),
                    f"{ratio:.2f}x" + (" slower" if ratio < 1 else ""),
                    str(hits),
                    str(misses),
                )
            )
            if len(counted) > 1:
                notes.append(
                    f"{query.name}: "
                    + ", ".join(
                        f"{label} hits={h} misses={m}" + ("" if h or m else " (never cached)")
                        for label, (h, m) in counted.items()
                    )
                )
        self.table(rows, numeric_from=1)
        self.stdout.write("  hits/misses: counted by querystash.stats() during the cached runs.")
        self.stdout.write("  fill run: the first cached run (a miss), not part of the median.")
        for note in notes:
            self.stdout.write(f"  {note}")
        faster = [name for name, ratio in ratios if ratio > 1]
        slower = [f"{name} ({ratio:.2f}x)" for name, ratio in ratios if ratio < 1]
        self.stdout.write(
            f"  a hit was faster than the database for {len(faster)} of {len(ratios)} queries"
            + (f"; SLOWER for: {', '.join(slower)}" if slower else "")
            + "."
        )
        self.stdout.write(
            "  A hit still builds the queryset, compiles its SQL (the cache key) and builds\n"
            "  the model instances; it saves the database's work. SQLite runs in this process\n"
            "  with its pages in memory, so a simple query saves little; joins and GROUP BY\n"
            "  over thousands of rows save the most, and a database over the network saves a\n"
            "  round trip on every hit besides."
        )
        self.stdout.write("")
        return total_hits, problems

    # -- invalidation ---------------------------------------------------------

    def invalidation(self):
        """Write one product; show which cached reads went stale and which did not."""
        queries = {q.name: q for q in self.queries()}
        watched = [
            (queries["get by pk"], "reads shop_product"),
            (queries["select_related, 100 rows"], "joins shop_product"),
            (queries["values_list, 200 rows"], "reads shop_product"),
            (queries["category list"], "reads shop_category only"),
        ]
        unaffected = queries["category list"]
        product = Product.objects.nocache().get(pk=self.product.pk)
        old_price = product.price
        new_price = old_price + Decimal("1.00")
        problems = []
        fresh = False

        self.stdout.write(
            f"Invalidation: product {product.pk} ({product.name!r}): price {old_price} -> "
            f"{new_price} with save(), then back to {old_price} with QuerySet.update()"
        )
        for query, _ in watched:
            query.run(True)  # make sure every entry is cached before the write

        for label, write, price in [
            ("product.save()", lambda: self.save_price(product, new_price), new_price),
            ("QuerySet.update()", lambda: self.update_price(product, old_price), old_price),
        ]:
            before = invalidation_count()
            write()
            invalidated = invalidation_count() - before
            self.stdout.write(f"  after {label}: {invalidated} invalidation(s) counted")
            for query, why in watched:
                before = counters(query.models)
                result = query.run(True)
                seen = outcome(before, counters(query.models))
                correct = result == query.run(False)
                note = "same rows as the database" if correct else "DIFFERS from the database"
                if query.name == "get by pk":
                    note = f"price {result[2]}, {note}"
                    if seen == "miss" and correct and result[2] == price and invalidated:
                        fresh = True
                self.stdout.write(f"    {query.name:<26} {why:<25} {seen:<5} {note}")
                if not correct:
                    problems.append(f"after {label}: {query.name} served stale rows")
                if query is unaffected and seen != "hit":
                    self.stdout.write("      (no category was written: a hit was expected)")
        self.stdout.write("")
        return fresh, problems

    def save_price(self, product, price):
        product.price = price
        product.save(update_fields=["price"])

    def update_price(self, product, price):
        Product.objects.filter(pk=product.pk).update(price=price)

    # -- output ---------------------------------------------------------------

    def print_stats(self):
        fields = ("hits", "misses", "fills", "invalidations", "bypasses")
        rows = [("querystash.stats()", *fields)]
        for label, counts in querystash.stats().items():
            rows.append((label or "(store-wide)", *(str(counts.get(f, 0)) for f in fields)))
        self.table(rows, numeric_from=1)
        self.stdout.write("")

    def table(self, rows, numeric_from):
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for n, row in enumerate(rows):
            cells = [
                cell.rjust(width) if i >= numeric_from else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            self.stdout.write("  " + "  ".join(cells).rstrip())
            if n == 0:
                self.stdout.write("  " + "  ".join("-" * width for width in widths))
