"""Two plain JSON views: querystash needs no change to view code."""

from django.db.models import Avg
from django.http import JsonResponse
from django.shortcuts import get_object_or_404

from .models import Product


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
