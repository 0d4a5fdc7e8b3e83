"""Two plain JSON views, and one HTML page to look at with the debug
toolbar: querystash needs no change to view code."""

from django.db.models import Avg, Count, F
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from .models import Category, Product


def product_list(request):
    products = (
        Product.objects.select_related("category").filter(in_stock=True).order_by("-created")[:20]
    )
    return JsonResponse(
        {
            "products": [
                {"id": p.pk, "name": p.name, "category": p.category.name, "price": str(p.price)}
                for p in products
            ]
        }
    )


def product_detail(request, pk):
    product = get_object_or_404(Product.objects.select_related("category"), pk=pk)
    rating = product.reviews.aggregate(avg=Avg("rating"))["avg"]
    return JsonResponse(
        {
            "id": product.pk,
            "name": product.name,
            "category": product.category.name,
            "price": str(product.price),
            "in_stock": product.in_stock,
            "tags": list(product.tags.values_list("name", flat=True)),
            "average_rating": rating,
        }
    )


def shop_page(request):
    """An HTML page whose reads show each thing the debug-toolbar panel tells:
    cached reads, a volatile one (order_by('?'): never cached), one asking
    for .nocache(), and with ?touch=<pk> a write and its invalidation."""
    touch = request.GET.get("touch")
    if touch:
        # Rewrites the price with itself: the data stays, the write invalidates.
        Product.objects.filter(pk=int(touch)).update(price=F("price"))
    categories = list(Category.objects.annotate(n=Count("products")).order_by("name"))
    newest = list(
        Product.objects.select_related("category").filter(in_stock=True).order_by("-created")[:10]
    )
    featured = Product.objects.order_by("?").first()
    total = Product.objects.nocache().count()
    return render(request, "shop/page.html", {
        "categories": categories, "newest": newest, "featured": featured, "total": total,
    })
